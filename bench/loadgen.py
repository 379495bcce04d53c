"""A lean HTTP/1.1 load generator for POST /v1/seen, run in its own process.

Raw asyncio streams over keep-alive connections (no HTTP client library), so one core
drives well over the service's rate. Two modes:
- closed loop (default): every connection sends its next request when the last returns;
- open loop (--rate R): requests are scheduled at a fixed rate and latency is measured
  from the scheduled time, so a stall is not hidden by the generator waiting
  (no coordinated omission).
Prints one JSON line: counts, requests/s, latency percentiles, and the CPU it used; with
--keep-samples also every request's (scheduled wall-clock time, latency), so a caller can
cut the run into windows. SIGTERM ends the run early, with the same report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec


class Result(msgspec.Struct):
    requests: int
    ok: int
    recorded: int
    errors: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float
    statuses: dict[str, int]
    # (request index, monotonic time the 200 arrived): for end-to-end latency.
    receipts: list[tuple[str, float]] = []
    # (scheduled time, Unix seconds; latency, seconds) per answered request.
    samples: list[tuple[float, float]] = []


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    recorded: int = 0
    errors: int = 0
    receipts: list[tuple[str, float]] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Connection:
    def __init__(self, host: str, port: int, path: str, tokens: list[str]) -> None:
        self.host, self.port, self.path, self.tokens = host, port, path, tokens
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, n: int, item_id: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        body = b'{"tag":"promotions","id":"' + item_id.encode() + b'"}'
        token = self.tokens[n % len(self.tokens)]
        self.writer.write(
            b"POST " + self.path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.writer.close()
            self.reader = self.writer = None
        return status, payload


async def run(args: argparse.Namespace) -> Result:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    tokens = [t for t in open(args.tokens).read().split() if t]  # noqa: ASYNC230 (before the clock starts)
    stats = Stats()
    conns = [
        Connection(host, port, url.path or "/v1/seen", tokens) for _ in range(args.connections)
    ]
    await asyncio.gather(*(c.open() for c in conns))
    counter = iter(range(10**12))
    start = time.monotonic()
    wall_start = time.time()
    deadline = start + args.duration
    keep = args.keep_receipts
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)

    async def one(conn: Connection, scheduled: float) -> None:
        n = next(counter)
        item_id = f"{args.prefix}-{n}"
        try:
            status, payload = await conn.post(n, item_id)
        except (OSError, asyncio.IncompleteReadError):
            stats.errors += 1
            conn.reader = conn.writer = None
            return
        done = time.monotonic()
        stats.latencies.append(done - scheduled)
        if args.keep_samples:
            stats.samples.append((wall_start + (scheduled - start), done - scheduled))
        stats.statuses[str(status)] = stats.statuses.get(str(status), 0) + 1
        if status == 200 and b'"recorded"' in payload:
            stats.recorded += 1
            if keep:
                stats.receipts.append((item_id, time.time()))

    async def closed_loop(conn: Connection) -> None:
        while time.monotonic() < deadline and not stopped.is_set():
            await one(conn, time.monotonic())

    async def open_loop() -> None:
        queue: asyncio.Queue[float] = asyncio.Queue()
        interval = 1.0 / args.rate

        async def worker(conn: Connection) -> None:
            while True:
                scheduled = await queue.get()
                await one(conn, scheduled)
                queue.task_done()

        workers = [asyncio.create_task(worker(c)) for c in conns]
        n = 0
        while True:
            scheduled = start + n * interval
            if scheduled >= deadline or stopped.is_set():
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(scheduled)
            n += 1
        await queue.join()
        for w in workers:
            w.cancel()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    if args.rate:
        await open_loop()
    else:
        await asyncio.gather(*(closed_loop(c) for c in conns))
    elapsed = time.monotonic() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = stats.latencies
    ok = stats.statuses.get("200", 0)
    return Result(
        requests=len(lat) + stats.errors,
        ok=ok,
        recorded=stats.recorded,
        errors=stats.errors,
        elapsed_s=elapsed,
        rps=ok / elapsed,
        p50_ms=percentile(lat, 0.50) * 1000,
        p90_ms=percentile(lat, 0.90) * 1000,
        p99_ms=percentile(lat, 0.99) * 1000,
        max_ms=max(lat, default=0.0) * 1000,
        cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        statuses=stats.statuses,
        receipts=stats.receipts,
        samples=stats.samples,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--tokens", required=True, help="file with bearer tokens, one a line")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--keep-receipts", action="store_true")
    parser.add_argument("--keep-samples", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    sys.stdout.write(json.dumps(msgspec.to_builtins(result)) + "\n")


if __name__ == "__main__":
    main()
