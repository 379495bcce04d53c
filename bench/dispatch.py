"""Dispatch throughput: the batching dispatcher against one Procrastinate job per row.

    python -m bench.dispatch [--quick] [--rows N] [--kafka HOST:PORT | --tansu]

For each case (HTTP to a single-event webhook sink in its own process; Kafka when
--kafka is given), it fills a fresh database with N outbox rows, then measures how long
the same delivery work takes
  1. with dispatcher.worker.Dispatcher (claim a batch, deliver, complete the batch), and
  2. as one Procrastinate job per row (claim that row, deliver it, complete it),
and prints rows/s for both and their ratio. Each case is one entry in CASES.

The server is DATABASE_URL, else the embedded PostgreSQL of development. A scratch
database is created and dropped. Filling the outbox is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import procrastinate
import psycopg

from bench.harness import Figure, print_table, scratch_database
from bench.naive import deliver_one_row
from bench.sql import bq
from dispatcher.main import run
from dispatcher.startup import start_up
from dispatcher.transport_base import Transport
from dispatcher.transport_registry import build_transports
from dispatcher.worker import Dispatcher
from service.config.core import DatabaseSettings
from service.config.load import Config, parse_config
from service.database import CONNECTION_OPTIONS, DEV_DATA_DIR, make_pool, start_embedded
from service.notify.templates import load_templates
from service.seen.store import MarkRow, record_marks
from service.wire import ClientSubject

SECRET = "whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC0wMQ=="
CONSUMER = "bench"
JOB_QUEUE = "bench-rows"
JOB_CONCURRENCY = 16


# --- the webhook sink, run as `python -m bench.dispatch --sink PORT` -----------------------


async def sink_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI consumer: reads the body, answers 204. Bare so that the sink is never
    the bottleneck being measured."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def run_sink(port: int) -> None:
    import uvicorn

    uvicorn.run(sink_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def http_sink() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "bench.dispatch", "--sink", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the webhook sink did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/seen"
    finally:
        proc.terminate()
        proc.wait(10)


# --- cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    # The consumer's config entry; entered once per case around both runs.
    consumer: Callable[[argparse.Namespace], contextlib.AbstractContextManager[dict[str, Any]]]
    enabled: Callable[[argparse.Namespace], bool] = lambda args: True


@contextmanager
def http_consumer(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    with http_sink() as url:
        yield {
            "transport": "http",
            "url": url,
            "secret": SECRET,
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
        }


@contextmanager
def kafka_consumer(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    yield {
        "transport": "kafka",
        "topic": f"bench.seen.{uuid.uuid4().hex[:8]}",
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
    }


CASES = [
    Case("http", http_consumer),
    Case("kafka", kafka_consumer, enabled=lambda args: bool(args.kafka)),
]


def make_config(url: str, consumer: dict[str, Any], args: argparse.Namespace) -> Config:
    data: dict[str, Any] = {
        "environment": "test",
        "database": {"url": url},
        "consumers": {CONSUMER: consumer},
        "tags": {"bench": {"consumer": CONSUMER, "event_type": "client", "remember_for": 3600}},
        "dispatcher": {"name": "bench", "sweep_interval": 1},
    }
    if args.kafka:
        # Tansu rejects the idempotent producer's handshake (InitProducerId).
        data["kafka"] = {"bootstrap_servers": args.kafka, "enable_idempotence": not args.tansu}
    return parse_config(data, "bench")


# --- database -------------------------------------------------------------------------------


async def fill(url: str, rows: int, round_: str) -> list[int]:
    """N fresh outbox rows for the bench consumer; their ids."""
    async with await psycopg.AsyncConnection.connect(url, options=CONNECTION_OPTIONS) as conn:
        for start in range(0, rows, 2000):
            marks = [
                MarkRow(
                    tag="bench",
                    item_id=f"{round_}-{n}",
                    subject_key=f"client:user-{n % 1000}",
                    subject_kind="client",
                    subject=ClientSubject(user_id=f"user-{n % 1000}"),
                    consumer=CONSUMER,
                    remember_for_s=3600.0,
                )
                for n in range(start, min(rows, start + 2000))
            ]
            async with conn.transaction():
                await record_marks(conn, marks)
        # The write path's wake-up jobs would only add noise to the per-row-job run.
        await conn.execute(bq("bench_clear_jobs"))
        await conn.commit()
        cur = await conn.execute(bq("bench_pending_ids"), {"prefix": f"{round_}-%"})
        return [row[0] for row in await cur.fetchall()]


async def delivered(conn: psycopg.AsyncConnection[Any], ids: list[int]) -> int:
    # By id range, not by id list: dumping a 20,000-element array on every poll cost this
    # process more CPU than the dispatcher it was timing.
    cur = await conn.execute(bq("bench_delivered_between"), {"lo": min(ids), "hi": max(ids)})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@asynccontextmanager
async def watch(url: str, ids: list[int], limit_s: float) -> AsyncIterator[Callable[[], Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

        async def until_done() -> None:
            deadline = time.monotonic() + limit_s
            while await delivered(conn, ids) < len(ids):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{await delivered(conn, ids)}/{len(ids)} delivered")
                await asyncio.sleep(0.1)

        yield until_done


# --- the two ways of doing the work ---------------------------------------------------------


async def run_dispatcher(config: Config, url: str, ids: list[int], limit_s: float) -> float:
    async with watch(url, ids, limit_s) as until_done:
        templates = load_templates(config)
        dispatcher = Dispatcher(config, url, name="bench", templates=templates)
        started = time.perf_counter()
        task = asyncio.create_task(dispatcher.run(start_up(config, url, templates, name="bench")))
        try:
            await until_done()
            return time.perf_counter() - started
        finally:
            dispatcher.stop()
            await task


async def run_jobs(config: Config, url: str, ids: list[int], limit_s: float) -> float:
    consumer = config.consumers[CONSUMER]
    transport: Transport = build_transports(config)[CONSUMER]
    db = make_pool(url, DatabaseSettings(pool_min=1, pool_max=JOB_CONCURRENCY), name="bench-jobs")
    await db.open(wait=True)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=1, max_size=JOB_CONCURRENCY + 2
        )
    )

    @app.task(name="bench.deliver_row", queue=JOB_QUEUE)
    async def deliver_row(outbox_id: int) -> None:
        await deliver_one_row(db, transport, CONSUMER, consumer, outbox_id)

    try:
        async with app.open_async(), watch(url, ids, limit_s) as until_done:
            for start in range(0, len(ids), 5000):
                jobs: list[dict[str, Any]] = [{"outbox_id": i} for i in ids[start : start + 5000]]
                await deliver_row.batch_defer_async(*jobs)
            started = time.perf_counter()
            await app.run_worker_async(
                queues=[JOB_QUEUE],
                concurrency=JOB_CONCURRENCY,
                wait=False,
                delete_jobs="successful",
                install_signal_handlers=False,
                listen_notify=False,
            )
            await until_done()
            return time.perf_counter() - started
    finally:
        await transport.close()
        await db.close()


async def bench_case(case: Case, args: argparse.Namespace, server: str) -> tuple[float, float]:
    with case.consumer(args) as consumer, scratch_database(server, "dispatch") as url:
        config = make_config(url, consumer, args)
        ids = await fill(url, args.rows, "dispatcher")
        took = await run_dispatcher(config, url, ids, args.timeout)
        batched = len(ids) / took
        # The per-row baseline is two orders slower; its rate does not depend on the row
        # count, so it gets fewer rows to keep a full run within minutes.
        ids = await fill(url, args.baseline_rows, "jobs")
        took = await run_jobs(config, url, ids, args.timeout)
        per_job = len(ids) / took
    return batched, per_job


async def main_async(args: argparse.Namespace) -> None:
    server = os.environ.get("DATABASE_URL") or start_embedded(DEV_DATA_DIR, stop_at_exit=True)
    rows: list[tuple[str, list[Figure]]] = []
    for case in CASES:
        if not case.enabled(args):
            continue
        batched: list[float] = []
        per_job: list[float] = []
        for run_no in range(args.runs):
            fast, slow = await bench_case(case, args, server)
            batched.append(fast)
            per_job.append(slow)
            print(
                f"run {run_no + 1}/{args.runs} {case.name}: dispatcher {fast:,.0f} rows/s, "
                f"job per row {slow:,.0f} rows/s",
                flush=True,
            )
        ratios = [b / j for b, j in zip(batched, per_job, strict=True) if j]
        rows.append(
            (
                case.name,
                [
                    Figure("dispatcher", "rows/s", batched),
                    Figure("job per row", "rows/s", per_job),
                    Figure("ratio", "x", ratios),
                ],
            )
        )
    print_table(
        f"dispatch: {args.rows:,} rows (baseline {args.baseline_rows:,}), concurrency "
        f"{args.concurrency}, batch {args.batch_size}; median (min-max) of {args.runs}",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small run (2,000 rows)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--kafka", help="bootstrap servers: also run the Kafka case")
    parser.add_argument(
        "--tansu",
        action="store_true",
        help="run the Kafka case against a Tansu broker of its own (from the test extra)",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink(args.sink)
        return
    if args.quick:
        args.rows, args.baseline_rows, args.runs = min(args.rows, 2000), 500, 1
    if args.tansu:
        from tests.kafka_broker import TansuBroker

        with TansuBroker(validate=False) as broker:
            args.kafka = broker.bootstrap_servers
            run(main_async(args))
        return
    run(main_async(args))  # uvloop, as dispatcher.main runs in production


if __name__ == "__main__":
    main()
