"""The dispatcher's keep-alive webhook client against raw HTTP servers on loopback that
misbehave in the ways real consumers do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from dispatcher.http_wire import WebhookPool, WireConnectError, WireError, WireTimeout
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server; yields its URL and a list that counts accepted connections."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook?x=1", connections
    finally:
        server.close()
        await server.wait_closed()


def pool(url: str, connections: int = 2) -> WebhookPool:
    return WebhookPool(url, connections, headers={"Content-Type": "application/json"})


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with raw_server(handler) as (url, connections):
        p = pool(url)
        for n in range(3):
            response = await p.post({"webhook-id": f"msg_{n}"}, b'{"n":%d}' % n, 2.0)
            assert response.status == 204
        await p.close()
    assert len(connections) == 1
    first = seen[0]
    assert first.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in first
    assert b"\r\nwebhook-id: msg_0\r\n" in first
    assert b'\r\nContent-Length: 7\r\n\r\n{"n":0}' in first


async def test_chunked_body_and_headers_are_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n7\r\n, later\r\n0\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, _):
        p = pool(url)
        response = await p.post({}, b"{}", 2.0)
        await p.close()
    assert response.status == 503
    assert response.headers["retry-after"] == "7"
    assert response.body == b"busy, later"


async def test_connection_close_is_honoured_and_a_new_connection_opened() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_server(handler) as (url, connections):
        p = pool(url)
        assert (await p.post({}, b"{}", 2.0)).body == b"ok"
        assert (await p.post({}, b"{}", 2.0)).body == b"ok"
        await p.close()
    assert len(connections) == 2


async def test_a_server_that_dropped_an_idle_connection_costs_no_failed_delivery() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers keep-alive, then closes right away, as a server with a short idle
        # timeout does between two deliveries.
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with raw_server(handler) as (url, connections):
        p = pool(url)
        assert (await p.post({}, b"{}", 2.0)).status == 200
        await asyncio.sleep(0.05)
        assert (await p.post({}, b"{}", 2.0)).status == 200
        await p.close()
    assert len(connections) == 2


async def test_a_silent_server_times_out_within_the_bound() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with raw_server(handler) as (url, _):
        p = pool(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(WireTimeout):
            await p.post({}, b"{}", 0.3)
        assert loop.time() - started < 1.0
        await p.close()


async def test_garbage_and_half_responses_are_errors_not_deliveries() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    for handler in (garbage, half):
        async with raw_server(handler) as (url, _):
            p = pool(url)
            with pytest.raises(WireError):
                await p.post({}, b"{}", 2.0)
            await p.close()


async def test_refused_connection_is_a_connect_error() -> None:
    p = pool(f"http://127.0.0.1:{free_port()}/hook")
    with pytest.raises(WireConnectError):
        await p.post({}, b"{}", 2.0)


async def test_cancelling_a_delivery_closes_its_connection() -> None:
    # Warnings are errors in this suite: a leaked socket would fail the test as an
    # "unclosed transport" ResourceWarning.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with raw_server(handler) as (url, _):
        p = pool(url)
        task = asyncio.create_task(p.post({}, b"{}", 10.0))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await p.close()
