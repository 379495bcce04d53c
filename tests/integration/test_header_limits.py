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
from tests.notify_api import EPISODE, new_key
from tests.support import client_token, make_config, notify_data, seen_counts, serve

pytestmark = pytest.mark.timeout(60)
BODY = b'{"tag": "promotions", "id": "p-1"}'


@asynccontextmanager
async def serve_bounded(db_url: str, **overrides: Any) -> AsyncIterator[str]:
    """The API under uvicorn with the protocol bin/dev uses."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(make_config(db_url, **overrides)),
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
async def both_servers(db_url: str, **overrides: Any) -> AsyncIterator[dict[str, str]]:
    async with (
        serve(create_app(make_config(db_url, **overrides))) as plain,
        serve_bounded(db_url, **overrides) as bounded,
    ):
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


# -- a head is only its own bytes: bodies and pipelined requests in the same read ----------

Answer = tuple[int, dict[str, str], bytes]


def message(
    method: str, path: str, auth: str, body: bytes = b"", *, chunked: bool = False
) -> bytes:
    """One request as bytes: a JSON body framed by Content-Length, or chunked."""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\n".encode()
    if not body:
        return head + b"\r\n"
    head += b"Content-Type: application/json\r\n"
    if chunked:
        halves = (body[: len(body) // 2], body[len(body) // 2 :])
        framed = b"".join(b"%x\r\n%s\r\n" % (len(half), half) for half in halves if half)
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    status_line = await asyncio.wait_for(reader.readline(), 20)
    headers: dict[str, str] = {}
    while (line := await asyncio.wait_for(reader.readline(), 20)) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 20)
    return int(status_line.split()[1]), headers, body


async def exchange(base: str, data: bytes, answers: int, *, piece: int = 0) -> list[Answer]:
    """Send `data` on one connection (in one write, or in writes of `piece` bytes) and read
    `answers` answers, reading while still sending."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    pieces = [data[n : n + piece] for n in range(0, len(data), piece)] if piece else [data]

    async def send_all() -> None:
        for part in pieces:
            await _send(writer, part)

    sending = asyncio.create_task(send_all())
    try:
        return [await read_answer(reader) for _ in range(answers)]
    finally:
        sending.cancel()
        writer.close()


def users_body(size: int) -> bytes:
    """A PUT /v1/users body of at least `size` bytes (under the 1000 users an import takes)."""
    users: list[dict[str, str]] = []
    while len(body := json.dumps({"users": users}).encode()) < size:
        n = len(users)
        users.append({"id": f"user-{n:05}", "email": f"user-{n:05}@mail.example.com"})
    return body


def event_body(user_ids: int, key: str = "many") -> bytes:
    recipients = {"user_ids": [f"user-{n:05}" for n in range(user_ids)]}
    event = {"type": "new_episode", "idempotency_key": key, "recipients": recipients}
    return json.dumps(event | {"data": EPISODE}).encode()


@pytest.mark.parametrize("kilobytes", [20, 33, 40, 60])
async def test_a_body_in_the_same_read_as_its_head_is_not_head(db_url: str, kilobytes: int) -> None:
    key = new_key(db_url, "content")
    body = users_body(kilobytes * 1000)
    users = json.loads(body)["users"]
    async with both_servers(db_url) as servers:
        for name, base in servers.items():
            [(status, _, answer)] = await exchange(base, message("PUT", "/v1/users", key, body), 1)
            assert status == 200, (name, answer)
            assert json.loads(answer)["users"] == len(users), name


async def test_an_event_to_3000_user_ids_in_one_write_is_accepted(db_url: str) -> None:
    key = new_key(db_url, "content")
    body = event_body(3000)
    assert len(body) > 33_000
    async with serve_bounded(db_url) as base:
        [(status, headers, answer)] = await exchange(
            base, message("POST", "/v1/events", key, body), 1
        )
    assert status == 202, answer
    accepted = json.loads(answer)
    assert accepted["created"] is True
    assert headers["location"] == f"/v1/events/{accepted['id']}"
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    async with conn:
        cur = await conn.execute("SELECT no_recipient FROM events")
        assert await cur.fetchall() == [(3000,)]


async def test_bodies_in_the_same_read_get_their_own_refusals(db_url: str) -> None:
    key = new_key(db_url, "content")
    seen = json.dumps({"tag": "promotions", "id": "x" * 60_000}).encode()
    depth = 10_000
    nested = (
        b'{"type": "new_episode", "idempotency_key": "deep", "recipients": {"all": true},'
        b' "data": {"series": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}}"
    )
    async with both_servers(db_url) as servers:
        for name, base in servers.items():
            [(status, _, answer)] = await exchange(
                base, message("POST", "/v1/seen", client_token(), seen), 1
            )
            assert (status, json.loads(answer)["code"]) == (413, "payload_too_large"), name
            [(status, _, answer)] = await exchange(
                base, message("POST", "/v1/events", key, nested), 1
            )
            assert (status, json.loads(answer)["code"]) == (400, "malformed_json"), name
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    async with conn:
        assert await seen_counts(conn) == (0, 0, 0)


@pytest.mark.parametrize("piece", [0, 997], ids=["one write", "997-byte writes"])
async def test_pipelined_requests_are_each_answered(db_url: str, piece: int) -> None:
    key = new_key(db_url, "content")
    users = users_body(40_000)
    requests = [
        message("PUT", "/v1/users", key, users),
        message("POST", "/v1/seen", client_token(), BODY),
        message("POST", "/v1/events", key, event_body(3000, "pipelined"), chunked=True),
        message("GET", "/v1/users/user-00007", key),
        message("POST", "/v1/seen", client_token(), json.dumps({"id": "x" * 5000}).encode()),
        message("POST", "/v1/seen", client_token("user-2"), BODY, chunked=True),
        message("GET", "/v1/users/nobody", key),
    ]
    async with serve_bounded(db_url) as base:
        answers = await exchange(base, b"".join(requests), len(requests), piece=piece)
    statuses = [status for status, _, _ in answers]
    assert statuses == [200, 200, 202, 200, 413, 200, 404], [body for _, _, body in answers]
    bodies = [json.loads(body) for _, _, body in answers]
    assert bodies[0]["users"] == len(json.loads(users)["users"])
    assert bodies[1]["status"] == "recorded"
    assert bodies[2]["created"] is True
    assert bodies[3]["email"] == "user-00007@mail.example.com"
    assert bodies[4]["code"] == "payload_too_large"
    assert bodies[5]["status"] == "recorded"
    assert bodies[6]["code"] == "unknown_user"


async def test_a_head_dribbled_after_a_body_is_still_bounded(db_url: str) -> None:
    # A request with its body, then a head that never ends, sent a few bytes at a time.
    first = message("POST", "/v1/seen", client_token(), BODY)
    endless = b"POST /v1/seen HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES * 4)
    async with serve_bounded(db_url) as base:
        answers = await exchange(base, first + endless, 2, piece=1000)
    assert [status for status, _, _ in answers] == [200, 431]
    assert json.loads(answers[1][2])["code"] == "headers_too_large"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_event_is_refused_before_the_rest_is_sent(
    db_url: str, chunked: bool
) -> None:
    """The events endpoint reads no further than its own limit, here (max_recipients 10)
    16 KiB + 16 KiB + 10 x 640 bytes: the answer comes while most of the body is unsent."""
    key = new_key(db_url, "content")
    notify = notify_data()["notify"] | {"max_recipients": 10}
    start = b'{"type": "new_episode", "idempotency_key": "big", "data": {"series": "'
    part = start + b"a" * 50_000
    head = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
    )
    if chunked:
        sent = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(part), part)
    else:
        sent = head + b"Content-Length: 1000000\r\n\r\n" + part
    async with both_servers(db_url, notify=notify) as servers:
        for name, base in servers.items():
            [(status, _, answer)] = await exchange(base, sent, 1)
            assert (status, json.loads(answer)["code"]) == (413, "payload_too_large"), name
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    async with conn:
        cur = await conn.execute("SELECT count(*) FROM events")
        assert await cur.fetchone() == (0,)
