"""The live inbox stream against polling, in the same run: commit → client latency, the
memory an open stream costs, and the requests and CPU the stream saves.

    .venv/bin/python -m bench.inbox_stream --streams 1000 [--runs 3] [--rate 20]
        [--duration 30] [--burst 500] [--items 20] [--workers 2] [--reconnect 100] [--quick]

A template database is seeded once: N users (user-0 ...), each with --items notifications
already in their inbox, and enough pending inbox deliveries for the changes the runs time.
Every deliverable row goes through the dispatcher's own calls (dispatcher/outbox.py:
claim_ids, then complete, which writes the change log and the NOTIFY in the delivering
transaction). Each variant of each run gets a fresh copy and a fresh API (uvicorn
service.asgi:app, --workers, the bounded protocol production runs), and the clients run
in their own process (bench/inbox_clients.py), one keep-alive connection each:

- **stream**: N clients hold `GET /v1/inbox/stream` open (each traded its JWT for a stream
  token first). The API's memory is taken with 0 and with N streams open.
- **poll**: N clients `GET /v1/inbox` every --interval seconds (1 s: the same freshness
  as the stream's retry), each at its own phase, one request in flight at most.

While all N clients are connected, a writer delivers --rate changes/s, each one new
inbox item for a user picked at random (one transaction per item, as the dispatcher
completes a batch of one), for --duration seconds: the CPU window of both variants. Then
a burst: --burst users' items in transactions of --batch (the dispatcher's batches of a
fan-out). With --reconnect, the stream variant then cuts the API's listeners (as a
database restart would) and commits a change for that many users while nobody listens:
every stream reads again when its listener is back, and the catch-up is measured.
Latency is from just after the writer's COMMIT returned to the moment the client process
parsed the message (stream) or the first page (poll) that holds the item. Every change
must reach its client exactly once; one that did not within the deadline is counted.

CPU is the API processes' (psutil, the uvicorn tree) and the PostgreSQL backends' of the
run's database (those connected at the window's end, from their CPU at its start), over
the steady window. The server is DATABASE_URL, else the embedded one in .data/pg-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.fanout import copy_of
from bench.harness import (
    PYTHON,
    Figure,
    Service,
    drop_database,
    median,
    print_table,
    run_api,
    server_url,
    tempdir,
    tokens_file,
)
from bench.inbox_clients import raise_fd_limit
from bench.inbox_seed import (
    Claimed,
    changes,
    claim,
    config_channel,
    config_text,
    deliver,
    pending,
    seed_template,
    writer_pool,
)
from bench.loadgen import percentile
from bench.sql import bq
from service.config.load import load_config
from service.config.notify import Channel

# After the writer stops: how long a change may take to reach its client before it is
# counted missed (polling that falls behind needs the longer one).
DEADLINE_S = {"stream": 10.0, "poll": 30.0}
# After the clients are ready: memory settles, polls spread over their phases.
SETTLE_S = 5.0
# --reconnect: how long the catch-up is watched (its CPU counted).
RECONNECT_WINDOW_S = 20.0
READ_FAILED = "inbox stream: a read failed"


# --- the clients' process ------------------------------------------------------------------


class Clients:
    """bench/inbox_clients.py, driven line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, tokens: Path, mode: str, interval: float) -> Clients:
        argv = ["-m", "bench.inbox_clients", "--url", url, "--tokens", str(tokens)]
        argv += ["--mode", mode, "--interval", str(interval)]
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**28,
        )
        return cls(process)

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the clients' process ended (on {command!r})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"quit\n")
        await self.process.stdin.drain()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# --- measuring -----------------------------------------------------------------------------


def api_rss_mb(api: Service) -> float:
    """Resident memory of the uvicorn tree (its workers and the parent), MB."""
    proc = psutil.Process(api.process.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def backends(url: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the run's database."""
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(bq("backend_pids"), {"dbname": dbname})]
    cpu: dict[int, float] = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        cpu[pid] = t.user + t.system
    return cpu


def db_cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    # A backend that connected within the window counts from zero.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def wait_arrivals(
    clients: Clients, got: dict[str, float], want: set[str], deadline_s: float
) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        got |= (await clients.ask("arrivals"))["arrivals"]
        if want <= got.keys() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


def latencies_ms(commits: dict[str, float], got: dict[str, float]) -> list[float]:
    return [1000 * (got[i] - at) for i, at in commits.items() if i in got]


async def one_run(
    db: str, config_file: Path, tokens: Path, args: argparse.Namespace, mode: str, run: int
) -> dict[str, float]:
    config = load_config(config_file)
    channel = config_channel(config)
    steady_rows, burst_rows, again = changes(await pending(db), args, random.Random(run))
    figures: dict[str, float] = {}
    async with writer_pool(db) as pool:
        claimed = await claim(pool, [o for o, _ in steady_rows + burst_rows + again])
        with run_api(config_file, db, workers=args.workers, log=args.log) as api:
            clients = await Clients.start(api.url, tokens, mode, args.interval)
            try:
                if mode == "stream":
                    # Both workers have served streams and started their listeners.
                    warm = await clients.ask(f"open {min(args.streams, 8 * args.workers)}")
                    assert warm["failed"] == 0, warm
                    await clients.ask("close")
                    await asyncio.sleep(SETTLE_S)
                rss0, conns0 = api_rss_mb(api), len(backends(db))
                opened = await clients.ask(f"open {args.streams}")
                if opened["failed"]:
                    raise SystemExit(f"{mode}: {opened['failed']} clients failed: {opened}")
                await asyncio.sleep(SETTLE_S)
                rss1, conns1 = api_rss_mb(api), len(backends(db))
                ready = (await clients.ask("stats"))["ready"]
                print(
                    f"{mode}: {args.streams:,} clients opened in {opened['seconds']:.1f} s, "
                    f"{ready:,} with their first {'message' if mode == 'stream' else 'page'} "
                    f"{SETTLE_S:g} s later; "
                    f"API RSS {rss0:.0f} -> {rss1:.0f} MB, database backends "
                    f"{conns0} -> {conns1}",
                    flush=True,
                )
                figures |= {"rss0": rss0, "rss": rss1}
                if mode == "stream":
                    figures["per_1000"] = (rss1 - rss0) / (args.streams / 1000)
                figures |= await steady(
                    api, db, clients, pool, channel, claimed, steady_rows, args, mode
                )
                figures |= await burst(
                    api, db, clients, pool, channel, claimed, burst_rows, args.batch, mode
                )
                if mode == "stream" and again:
                    figures |= await reconnect(
                        api, db, clients, pool, channel, claimed, again, args
                    )
                figures["load"] = os.getloadavg()[0]
            finally:
                await clients.stop()
    return figures


async def steady(
    api: Service,
    db: str,
    clients: Clients,
    pool: AsyncConnectionPool,
    channel: Channel,
    claimed: dict[int, Claimed],
    rows: list[tuple[int, str]],
    args: argparse.Namespace,
    mode: str,
) -> dict[str, float]:
    await clients.ask("arrivals")
    stats0 = await clients.ask("stats")
    api0, db0 = api.cpu_s(), backends(db)
    commits: dict[str, float] = {}
    start = time.monotonic()
    for n, (outbox_id, notification_id) in enumerate(rows):
        delay = start + n / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        commits[notification_id] = await deliver(pool, channel, [claimed[outbox_id]])
    window = time.monotonic() - start
    api1, db1 = api.cpu_s(), backends(db)
    stats1 = await clients.ask("stats")
    got: dict[str, float] = {}
    await wait_arrivals(clients, got, set(commits), DEADLINE_S[mode])
    lat = latencies_ms(commits, got)
    counted = {k: n - stats0["messages"].get(k, 0) for k, n in stats1["messages"].items()}
    ok = counted.get("200", 0)
    # Pages refused (a 503 when the pool had no connection for 3 s) or dropped connections.
    refused = sum(n for k, n in counted.items() if k not in ("200", "ready", "changes", "comment"))
    page_ms = [1000 * x for x in stats1["latencies"]]
    pushed = sum(counted.values())
    print(
        f"{mode}: {len(commits)} changes in {window:.1f} s; reached {len(lat)}, "
        f"p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms; "
        f"API CPU {100 * (api1 - api0) / window:.0f} %, database "
        f"{100 * db_cpu_between(db0, db1) / window:.0f} %; "
        + (
            f"{ok / window:,.0f} pages/s, {refused / window:,.0f}/s refused or dropped, "
            f"page p50 {percentile(page_ms, 0.5):.0f} ms, p99 {percentile(page_ms, 0.99):.0f} ms"
            if mode == "poll"
            else f"{pushed / window:,.0f} messages/s"
        ),
        flush=True,
    )
    return {
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "missed": float(len(commits) - len(lat) + stats1["duplicates"] - stats0["duplicates"]),
        "rps": ok / window if mode == "poll" else 0.0,
        "refused": refused / window if mode == "poll" else 0.0,
        "per_client": ok / window / args.streams if mode == "poll" else 0.0,
        "page_p99": percentile(page_ms, 0.99) if mode == "poll" else math.nan,
        "api_cpu": 100 * (api1 - api0) / window,
        "db_cpu": 100 * db_cpu_between(db0, db1) / window,
        "clients_cpu": 100 * (stats1["cpu_s"] - stats0["cpu_s"]) / window,
        "changes": len(commits) / window,
    }


async def burst(
    api: Service,
    db: str,
    clients: Clients,
    pool: AsyncConnectionPool,
    channel: Channel,
    claimed: dict[int, Claimed],
    rows: list[tuple[int, str]],
    batch: int,
    mode: str,
) -> dict[str, float]:
    if not rows:
        return {}
    await clients.ask("arrivals")
    api0, db0 = api.cpu_s(), backends(db)
    commits: dict[str, float] = {}
    # Back to back, as the dispatcher completes a fan-out's batches.
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        committed = await deliver(pool, channel, [claimed[o] for o, _ in chunk])
        commits |= {notification_id: committed for _, notification_id in chunk}
    got: dict[str, float] = {}
    await wait_arrivals(clients, got, set(commits), DEADLINE_S[mode])
    # Until the last arrival (and the next look at the arrivals, within 0.2 s): for the
    # stream, what the burst's reads cost; for polling, the polls meanwhile.
    api_ms = 1000 * (api.cpu_s() - api0) / len(rows)
    db_ms = 1000 * db_cpu_between(db0, backends(db)) / len(rows)
    lat = latencies_ms(commits, got)
    print(
        f"{mode}: burst of {len(rows)} users in transactions of {batch}: reached {len(lat)}, "
        f"p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, "
        f"last {max(lat, default=0):.1f} ms; CPU per change until then: API {api_ms:.2f} ms, "
        f"database {db_ms:.2f} ms",
        flush=True,
    )
    return {
        "burst_api_ms": api_ms,
        "burst_db_ms": db_ms,
        "burst_p50": percentile(lat, 0.5),
        "burst_max": max(lat, default=math.nan),
        "burst_missed": float(len(rows) - len(lat)),
    }


async def reconnect(
    api: Service,
    db: str,
    clients: Clients,
    pool: AsyncConnectionPool,
    channel: Channel,
    claimed: dict[int, Claimed],
    rows: list[tuple[int, str]],
    args: argparse.Namespace,
) -> dict[str, float]:
    """The listeners' connections cut (as a database restart or a network fault would):
    each comes back and wakes every stream of its process, which all read at once. Changes
    committed meanwhile (their NOTIFYs lost) reach their clients by that catch-up."""
    await asyncio.sleep(SETTLE_S)
    api0, db0, t0 = api.cpu_s(), backends(db), time.monotonic()
    await asyncio.sleep(RECONNECT_WINDOW_S / 4)
    # What the open streams cost with nothing to send (heartbeats), per second.
    idle = (api.cpu_s() - api0 + db_cpu_between(db0, backends(db))) / (time.monotonic() - t0)
    failed0 = args.log.read_text(errors="replace").count(READ_FAILED)
    with psycopg.connect(db, autocommit=True) as conn:
        cut = [r[0] for r in conn.execute(bq("stream_listeners"))]
        api0, db0, t0 = api.cpu_s(), backends(db), time.monotonic()
        for pid in cut:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        committed = await deliver(pool, channel, [claimed[o] for o, _ in rows])
        commits = {notification_id: committed for _, notification_id in rows}
        back = math.nan
        while time.monotonic() - t0 < RECONNECT_WINDOW_S:
            listening = [r[0] for r in conn.execute(bq("stream_listeners"))]
            if math.isnan(back) and len(listening) >= len(cut) and not set(listening) & set(cut):
                back = time.monotonic() - t0
            await asyncio.sleep(0.1)
    window = time.monotonic() - t0
    catch_up = api.cpu_s() - api0 + db_cpu_between(db0, backends(db)) - idle * window
    got: dict[str, float] = {}
    await wait_arrivals(clients, got, set(commits), DEADLINE_S["stream"])
    lat = latencies_ms(commits, got)
    failed = args.log.read_text(errors="replace").count(READ_FAILED) - failed0
    print(
        f"stream: listeners cut, back after {back:.1f} s; {len(lat)} of {len(rows)} changes "
        f"made meanwhile reached their client, p50 {percentile(lat, 0.5):,.0f} ms, last "
        f"{max(lat, default=math.nan):,.0f} ms; the catch-up took {catch_up:.1f} s of CPU "
        f"(API and database, over idle: {100 * idle:.0f} % of a core); {failed:,} reads "
        "failed (no pool connection within its timeout) and were retried",
        flush=True,
    )
    return {
        "re_p50": percentile(lat, 0.5),
        "re_max": max(lat, default=math.nan),
        "re_cpu": catch_up,
        "re_failed": float(failed),
        "idle_cpu": 100 * idle,
        "re_missed": float(len(rows) - len(lat)),
    }


# --- the report ----------------------------------------------------------------------------

COLUMNS = [
    ("p50", "p50", "ms"),
    ("p99", "p99", "ms"),
    ("burst_p50", "burst p50", "ms"),
    ("burst_max", "burst last", "ms"),
    ("rps", "requests", "1/s"),
    ("api_cpu", "API CPU", "%"),
    ("db_cpu", "db CPU", "%"),
    ("clients_cpu", "clients CPU", "%"),
    ("rss", "API RSS", "MB"),
]


def spread(values: Sequence[float], fmt: str = "{:,.1f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    names = {"stream": "stream", "poll": f"poll {args.interval:g} s"}
    print_table(
        f"The live inbox: {args.streams:,} clients streaming or polling, {args.workers} uvicorn "
        "workers; commit → client latency; "
        f"{args.rate:g} changes/s for {args.duration:g} s, then a burst of {args.burst:,} "
        f"(transactions of {args.batch}); "
        f"median (min-max) of {args.runs}",
        [
            (names[mode], [Figure(title, unit, [r[k] for r in rows]) for k, title, unit in COLUMNS])
            for mode, rows in results.items()
        ],
    )
    for mode, rows in results.items():
        missed = sum(r["missed"] + r.get("burst_missed", 0) + r.get("re_missed", 0) for r in rows)
        print(f"{mode}: changes that did not reach their client once (missed or twice): {missed:g}")
    stream, poll = results.get("stream", []), results.get("poll", [])
    if stream:
        print(
            f"stream: API memory per 1,000 open streams: {spread([r['per_1000'] for r in stream])} "
            f"MB (RSS of the uvicorn tree with 0 streams "
            f"{spread([r['rss0'] for r in stream], '{:,.0f}')} MB)"
        )
        if "re_cpu" in stream[0]:
            print(
                f"stream: {args.streams:,} open streams idle (heartbeats): "
                f"{spread([r['idle_cpu'] for r in stream])} % of a core; the listeners' "
                f"reconnect: catch-up {spread([r['re_cpu'] for r in stream])} s of CPU, "
                f"{spread([r['re_failed'] for r in stream], '{:,.0f}')} reads failed and "
                f"retried; changes made meanwhile reached their client after "
                f"{spread([r['re_p50'] for r in stream], '{:,.0f}')} ms (p50), the last "
                f"{spread([r['re_max'] for r in stream], '{:,.0f}')} ms"
            )
        print(
            f"stream: the burst's CPU per change, API "
            f"{spread([r['burst_api_ms'] for r in stream], '{:.2f}')} ms, database "
            f"{spread([r['burst_db_ms'] for r in stream], '{:.2f}')} ms"
        )
    if poll:
        print(
            f"poll: pages/s per client {spread([r['per_client'] for r in poll], '{:.2f}')} "
            f"(asked: {1 / args.interval:g}), refused or dropped "
            f"{spread([r['refused'] for r in poll], '{:,.0f}')}/s, page p99 "
            f"{spread([r['page_p99'] for r in poll], '{:,.0f}')} ms"
        )
        # Per page only where pages were all the CPU went to: an overloaded API spends it on
        # refusals (503s and their tracebacks) and on reconnects.
        served = [r for r in poll if r["rps"] and r["refused"] < 0.01 * r["rps"]]
        api_us = [10_000 * r["api_cpu"] / r["rps"] for r in served]
        db_us = [10_000 * r["db_cpu"] / r["rps"] for r in served]
        cores = [
            (a + d) * args.streams / args.interval / 1e6 for a, d in zip(api_us, db_us, strict=True)
        ]
        print(
            f"poll: CPU per page served, API {spread(api_us, '{:,.0f}')} µs, database "
            f"{spread(db_us, '{:,.0f}')} µs: {args.streams:,} clients every "
            f"{args.interval:g} s would take {spread(cores, '{:.1f}')} cores"
            + ("" if served else " (overloaded: pages were refused)")
        )
    if stream and poll:
        pairs = list(zip(stream, poll, strict=False))
        cpu = [(p["api_cpu"] + p["db_cpu"]) / (s["api_cpu"] + s["db_cpu"]) for s, p in pairs]
        saved_cpu = [(p["api_cpu"] + p["db_cpu"]) - (s["api_cpu"] + s["db_cpu"]) for s, p in pairs]
        saved_rps = [p["rps"] - s["rps"] for s, p in pairs]
        print(
            f"poll / stream API+database CPU: {median(cpu):.1f}x "
            f"(per run {min(cpu):.1f}-{max(cpu):.1f})"
        )
        print(f"API+database CPU the stream saves, % of a core: {spread(saved_cpu, '{:,.0f}')}")
        print(
            f"requests/s the stream saves: {spread(saved_rps, '{:,.0f}')} served "
            f"(polling asked for {args.streams / args.interval:,.0f})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000, help="clients (users)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="changes/s, steady")
    parser.add_argument("--duration", type=float, default=30.0, help="steady seconds")
    parser.add_argument("--burst", type=int, default=500, help="users in the burst")
    parser.add_argument("--batch", type=int, default=500, help="the burst's transactions")
    parser.add_argument("--items", type=int, default=20, help="inbox items per user")
    parser.add_argument("--interval", type=float, default=1.0, help="poll: seconds")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--pool-max", type=int, default=16, help="per API process")
    parser.add_argument("--variants", default="stream,poll")
    parser.add_argument(
        "--reconnect",
        type=int,
        default=0,
        metavar="USERS",
        help="stream: then cut the listeners, with a change for USERS users meanwhile",
    )
    parser.add_argument("--log", type=Path, help="the API's output (default: a temporary file)")
    parser.add_argument("--quick", action="store_true", help="200 clients, 5 s, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.streams, args.runs, args.duration = min(args.streams, 200), 1, 5.0
        args.burst = min(args.burst, 100)
    args.burst = min(args.burst, args.streams)
    modes = [m for m in ("stream", "poll") if m in args.variants.split(",")]
    raise_fd_limit()
    server = server_url()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with tempdir() as tmp:
        args.log = args.log or Path(tmp) / "api.log"
        config_file = Path(tmp) / "inbox.toml"
        config_file.write_text(config_text(args.pool_max))
        tokens = tokens_file(Path(tmp), args.streams)
        template = seed_template(server, load_config(config_file), args)
        try:
            for run in range(args.runs):
                # The variants take turns going first.
                for mode in modes if run % 2 == 0 else modes[::-1]:
                    with copy_of(server, template, "inbox") as db:
                        figures = asyncio.run(one_run(db, config_file, tokens, args, mode, run))
                    results[mode].append(figures)
        finally:
            drop_database(server, template)
            complaints = api_complaints(args.log)
    report(results, args)
    print("API output above INFO:", *(complaints[:8] or ["none"]), sep="\n  ")


def api_complaints(log: Path) -> list[str]:
    """The API's lines above INFO (its request lines are INFO), counted by kind."""
    if not log.exists():
        return []
    kinds: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = {"level": "?", "message": line}
        if not isinstance(record, dict) or record.get("level") == "INFO":
            continue
        exc = str(record.get("exc", "")).strip().splitlines()
        # Request lines by route and status, not by their duration.
        message = re.sub(r"[\d.]+ ms", "... ms", str(record.get("message", "")))
        message = re.sub(r"0x[0-9a-f]+", "0x...", message)
        kind = f"{record.get('level')} {record.get('logger', '')}: {message}"
        kind = kind.strip()[:100] + (f" ({exc[-1][:100]})" if exc else "")
        kinds[kind] = kinds.get(kind, 0) + 1
    return [f"{n:,} x {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])]


if __name__ == "__main__":
    main()
