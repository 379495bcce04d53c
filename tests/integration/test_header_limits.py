"""Request heads are bounded: too many headers, or too many bytes of them, are a 431
`headers_too_large` (JSON), both from the application under uvicorn's default protocol
and from the bounded httptools protocol bin/dev runs, which refuses before buffering
more. Raw requests over a socket, since HTTP clients refuse to send such heads."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import uvicorn

from service.app import create_app
from service.http_limits import MAX_HEADER_BYTES, MAX_HEADERS, BoundedHttpToolsProtocol
from tests.support import client_token, make_config, seen_counts, serve

pytestmark = pytest.mark.timeout(60)
BODY = b'{"tag": "promotions", "id": "p-1"}'


@asynccontextmanager
async def serve_bounded(db_url: str) -> AsyncIterator[str]:
    """The API under uvicorn with the protocol bin/dev uses."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(make_config(db_url)),
        log_level="warning",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        http=BoundedHttpToolsProtocol,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def both_servers(db_url: str) -> AsyncIterator[dict[str, str]]:
    async with serve(create_app(make_config(db_url))) as plain, serve_bounded(db_url) as bounded:
        yield {"default protocol": plain, "bounded protocol": bounded}


async def raw_request(base: str, head_lines: list[bytes], body: bytes = BODY) -> tuple[int, Any]:
    """Send one request as bytes; the status and the JSON body of the answer."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = b"POST /v1/seen HTTP/1.1\r\nHost: x\r\n" + b"".join(
            line + b"\r\n" for line in head_lines
        )
        head += b"Content-Type: application/json\r\n"
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        sending = asyncio.create_task(_send(writer, head + body))
        # Read the answer while still sending: the server may refuse before reading all.
        status_line = await asyncio.wait_for(reader.readline(), 20)
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), 20)) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await asyncio.wait_for(reader.readexactly(length), 20)
        sending.cancel()
    finally:
        writer.close()
    return int(status_line.split()[1]), json.loads(payload) if payload else None


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass  # the server answered and stopped reading: what the test is about


def authorization() -> bytes:
    return b"Authorization: Bearer " + client_token().encode()


async def test_a_normal_request_is_answered(db_url: str) -> None:
    async with both_servers(db_url) as servers:
        for name, base in servers.items():
            status, body = await raw_request(base, [authorization(), b"X-Pad: " + b"p" * 4000])
            assert status == 200, (name, body)
            assert body["status"] in {"recorded", "duplicate"}


@pytest.mark.parametrize(
    "head",
    [
        pytest.param([b"X-Big: " + b"a" * (1024 * 1024)], id="one 1 MB header"),
        pytest.param([b"X-H%d: v" % n for n in range(50_000)], id="50000 headers"),
        pytest.param([b"X-H%d: v" % n for n in range(MAX_HEADERS + 1)], id="just too many"),
        pytest.param([b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 1)], id="just over the byte limit"),
    ],
)
async def test_oversized_heads_are_refused_and_change_nothing(
    db_url: str, head: list[bytes]
) -> None:
    async with both_servers(db_url) as servers:
        for name, base in servers.items():
            status, body = await raw_request(base, [authorization(), *head])
            assert status == 431, name
            assert body["code"] == "headers_too_large", name
            assert body["message"]
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    async with conn:
        assert await seen_counts(conn) == (0, 0, 0)


async def test_the_limits_are_exact_at_the_application(db_url: str) -> None:
    # MAX_HEADERS headers in all (Host, Authorization, Content-Type and Content-Length
    # included) are still served.
    fillers = [b"X-H%d: v" % n for n in range(MAX_HEADERS - 4)]
    async with serve(create_app(make_config(db_url))) as base:
        status, body = await raw_request(base, [authorization(), *fillers])
        assert status == 200, body
        status, body = await raw_request(base, [authorization(), *fillers, b"X-One: more"])
        assert (status, body["code"]) == (431, "headers_too_large")
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    async with conn:
        marks, outbox, _ = await seen_counts(conn)
    assert (marks, outbox) == (1, 1)
