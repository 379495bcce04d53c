"""Many inbox clients in one process, for bench/inbox_stream.py: each a signed-in page that
either holds the live stream open or polls the inbox, over its own keep-alive connection.

    python -m bench.inbox_clients --url URL --tokens FILE --mode stream|poll [--interval 1]

- stream: trade the client JWT for a stream token (`POST /v1/inbox/stream-token`), then
  `GET /v1/inbox/stream?token=` and read it as EventSource does (chunked body, messages
  split on blank lines, `data:` decoded as JSON);
- poll: `GET /v1/inbox` every --interval seconds, at most one request in flight per
  client (a tick missed while a request is still out is skipped), each client at its own
  phase of the interval.

Either way, the time an item id is first seen by a client is kept (Unix seconds, taken
as soon as the message or the response is parsed), with a count of items that came twice.
Raw asyncio sockets and no HTTP library, so that one core holds thousands of clients.

Driven over stdin, one command a line, each answered with one JSON line on stdout:
  open N     open clients 0..N-1 (token file order), 64 at a time; answered once every
             stream has its `ready` message (or failed), or every poller is connected
             (each polls from a random phase of the interval on)
  stats      cumulative counters, this process's CPU seconds, and the poll latencies
             since the last `stats`
  arrivals   {item id: first seen} since the last `arrivals`
  close      close every client
  quit       exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

# The ids of a GET /v1/inbox page (InboxItem.id is the only "id" key, and a quote inside a
# JSON string is escaped, so a title cannot fake one).
PAGE_IDS = re.compile(rb'"id":"(\d+)"')
OPEN_CONCURRENCY = 64
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class ClientError(Exception):
    pass


@dataclass
class Tally:
    arrivals: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    # stream: messages by event (and heartbeat comments); poll: pages by HTTP status.
    messages: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    # poll: each request's time to its response, seconds.
    latencies: list[float] = field(default_factory=list)

    def count(self, key: str) -> None:
        self.messages[key] = self.messages.get(key, 0) + 1

    def arrived(self, item_id: str, at: float) -> None:
        if item_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[item_id] = at


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """A response with a Content-Length: (status, head, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(head[9:12]), head, await reader.readexactly(length)


class Client:
    def __init__(self, host: str, port: int, token: str, tally: Tally) -> None:
        self.host, self.port, self.token, self.tally = host, port, token, tally
        # stream: the `ready` message came; poll: a first page came.
        self.first = asyncio.Event()
        # What `open` waits for: stream: as `first` (or failed); poll: connected.
        self.started = asyncio.Event()
        self.failed: str | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        try:
            reader, self.writer = await asyncio.open_connection(self.host, self.port)
            await self.serve(reader, self.writer)
        except (OSError, asyncio.IncompleteReadError, ClientError, ValueError) as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            self.tally.errors += 1
        finally:
            self.started.set()
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class StreamClient(Client):
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"POST /v1/inbox/stream-token HTTP/1.1\r\nHost: bench\r\n"
            b"Authorization: Bearer " + self.token.encode() + b"\r\nContent-Length: 0\r\n\r\n"
        )
        status, _, body = await read_response(reader)
        if status != 200:
            raise ClientError(f"stream-token answered {status}: {body[:200]!r}")
        stream_token: str = _decode(body)["token"]
        writer.write(
            b"GET /v1/inbox/stream?token=" + stream_token.encode() + b" HTTP/1.1\r\n"
            b"Host: bench\r\nAccept: text/event-stream\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if int(head[9:12]) != 200:
            raise ClientError(f"the stream answered {head[:12]!r}")
        if b"transfer-encoding: chunked" not in head.lower():
            raise ClientError("the stream is not chunked")
        buffer = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return  # the server ended the stream
            buffer += chunk[:-2]
            while b"\n\n" in buffer:
                message, buffer = buffer.split(b"\n\n", 1)
                self.message(message, time.time())

    def message(self, raw: bytes, at: float) -> None:
        event, data = b"message", b""
        for line in raw.split(b"\n"):
            if line.startswith(b":"):
                self.tally.count("comment")
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"event":
                event = value
            elif name == b"data":
                data += value
        if not data:
            return  # retry: or a heartbeat
        self.tally.count(event.decode())
        if event == b"ready":
            self.first.set()
            self.started.set()
        elif event == b"changes":
            body: dict[str, Any] = _decode(data)
            for item in body["items"]:
                self.tally.arrived(item["id"], at)


class PollClient(Client):
    """Polls on, as a page's timer would: a refused or dropped request is counted and the
    next tick sends again, on a new connection if the server closed this one."""

    def __init__(self, host: str, port: int, token: str, tally: Tally, interval: float) -> None:
        super().__init__(host, port, token, tally)
        self.interval = interval

    async def run(self) -> None:
        request = (
            b"GET /v1/inbox HTTP/1.1\r\nHost: bench\r\n"
            b"Authorization: Bearer " + self.token.encode() + b"\r\n\r\n"
        )
        known: set[bytes] | None = None
        reader: asyncio.StreamReader | None = None
        # Pages opened at different times: each client polls at its own phase.
        next_at = time.monotonic() + random.random() * self.interval
        try:
            while True:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    if reader is None:
                        reader, self.writer = await asyncio.open_connection(self.host, self.port)
                        self.started.set()
                    assert self.writer is not None
                    sent = time.monotonic()
                    self.writer.write(request)
                    status, head, body = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    self.tally.count("dropped")
                    self.tally.errors += 1
                    self.close()
                    reader = self.writer = None
                else:
                    at = time.time()
                    self.tally.latencies.append(time.monotonic() - sent)
                    self.tally.count(str(status))
                    if status == 200:
                        ids = PAGE_IDS.findall(body)
                        if known is None:
                            known = set(ids)
                            self.first.set()
                        for item_id in ids:
                            if item_id not in known:
                                known.add(item_id)
                                self.tally.arrived(item_id.decode(), at)
                    if b"connection: close" in head.lower():
                        self.close()
                        reader = self.writer = None
                # The next tick: a page that took longer than the interval skips the ticks
                # it missed.
                next_at += self.interval
                now = time.monotonic()
                if next_at < now:
                    next_at += self.interval * ((now - next_at) // self.interval + 1)
        finally:
            self.close()


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.tokens = [t for t in Path(args.tokens).read_text().split() if t]
        self.args = args
        self.tally = Tally()
        self.clients: list[Client] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def new_client(self, n: int) -> Client:
        token = self.tokens[n]
        if self.args.mode == "stream":
            return StreamClient(self.host, self.port, token, self.tally)
        return PollClient(self.host, self.port, token, self.tally, self.args.interval)

    async def open(self, count: int) -> dict[str, Any]:
        t0 = time.monotonic()
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one(n: int) -> None:
            async with gate:
                client = self.new_client(n)
                self.clients.append(client)
                task = asyncio.create_task(client.run())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                await client.started.wait()

        await asyncio.gather(*(one(n) for n in range(count)))
        failed = [c.failed for c in self.clients if c.failed]
        return {
            "opened": len(self.clients) - len(failed),
            "ready": sum(c.first.is_set() and not c.failed for c in self.clients),
            "seconds": time.monotonic() - t0,
            "failed": len(failed),
            "first_failure": failed[0] if failed else None,
        }

    async def close(self) -> dict[str, Any]:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            client.close()
        self.clients = []
        return {"closed": True}

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        open_now = sum(1 for c in self.clients if c.failed is None)
        return {
            "open": open_now,
            "ready": sum(c.first.is_set() for c in self.clients),
            "messages": self.tally.messages,
            "errors": self.tally.errors,
            "duplicates": self.tally.duplicates,
            "latencies": self.take_latencies(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "at": time.time(),
        }

    def take_latencies(self) -> list[float]:
        latencies, self.tally.latencies = self.tally.latencies, []
        return latencies

    def take_arrivals(self) -> dict[str, Any]:
        arrivals, self.tally.arrivals = self.tally.arrivals, {}
        return {"arrivals": arrivals}


async def main_async(args: argparse.Namespace) -> None:
    driver = Driver(args)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        command, _, arg = line.strip().partition(" ")
        if command == "open":
            answer = await driver.open(int(arg))
        elif command == "stats":
            answer = driver.stats()
        elif command == "arrivals":
            answer = driver.take_arrivals()
        elif command == "close":
            answer = await driver.close()
        elif command in ("quit", ""):
            await driver.close()
            return
        else:
            answer = {"error": f"unknown command {command!r}"}
        sys.stdout.buffer.write(_encode(answer) + b"\n")
        sys.stdout.flush()


def raise_fd_limit() -> None:
    """As many sockets as the hard limit allows: one per client (or per stream served)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the API's base URL")
    parser.add_argument("--tokens", required=True, help="client JWTs, one a line")
    parser.add_argument("--mode", choices=("stream", "poll"), required=True)
    parser.add_argument("--interval", type=float, default=1.0, help="poll: seconds")
    args = parser.parse_args()
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
