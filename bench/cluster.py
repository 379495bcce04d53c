"""A Citus cluster against one PostgreSQL on the same machine, each workload in the same run.

    python -m bench.cluster --citus URL [--single URL] [--runs R] [--quick]
                            [--marks N] [--rows N] [--users N] [--items N]
                            [--only WORKLOAD ...] [--cached-conns N]

--citus is the coordinator's database of a cluster with the citus extension and its
workers added (CI's loopback cluster: a coordinator and two workers); it is migrated in
the cluster mode once and emptied before each run. --single is a PostgreSQL server
(default DATABASE_URL, else the embedded one in .data/pg-bench); each run gets a fresh
database there. Each workload runs on both, R times, alternating:

  1. intake: the seen intake's group-commit statement (record_seen_marks), batches of 100
     marks from 8 connections, N marks (default 50,000) of new subjects; and again with
     Citus keeping --cached-conns connections to each worker between statements
     (citus.max_cached_conns_per_worker, default 1: docs/scaling.md);
  2. dispatch: N pending seen rows (default 20,000) claimed and completed delivered in
     batches of 500 by 2 workers, group by group of buckets, as dispatchers do
     (claim_outbox, complete_outbox: one shard per statement on the cluster);
  3. fan-out: one event to `all` of U users (default 50,000), materialized by the notify
     task's own code (service/notify/fanout.py), 2 workers, chunks of 10,000;
  4. digest: I open digest items (default 50,000) of U/2 users, flushed by
     flush_digests().

Printed per workload: the rate on each (median of R, min-max) and the ratio cluster /
single. The baseline is the single node: two cores shared by the coordinator, two workers
and this process cannot show a cluster scaling out, so what this measures is what a
statement costs once it crosses nodes, the per-shard figures docs/scaling.md's capacity
model starts from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
from psycopg.conninfo import make_conninfo

from bench.harness import Figure, drop_database, fresh_database, print_table, server_url
from bench.sql import bq
from service import migrate
from service.notify.catalog import catalog_params
from service.notify.fanout import materialize_parallel
from service.notify.templates import load_templates
from service.sql import q
from tests.support import empty_database, make_config

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/3"}
BATCH = 500
WORKERS = 2
INTAKE_CONNECTIONS = 8
INTAKE_BATCH = 100


@contextmanager
def single_database(server: str) -> Iterator[str]:
    url = fresh_database(server, "cluster_single")
    try:
        yield url
    finally:
        drop_database(server, url)


@contextmanager
def cluster_database(url: str) -> Iterator[str]:
    empty_database(url)
    yield url


def with_options(url: str, setting: str) -> str:
    """The URL with a server setting for its sessions (libpq's `options`)."""
    return make_conninfo(url, options=f"-c {setting}")


def sync_catalog(url: str) -> None:
    config = make_config(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(q("sync_notify_config"), catalog_params(config, load_templates(config)))


def marks(start: int, n: int) -> str:
    return json.dumps(
        [
            {
                "tag": "promotions",
                "item_id": f"p-{i}",
                "subject_key": f"client:u{i}",
                "subject_kind": "client",
                "subject": {"user_id": f"u{i}"},
                "consumer": "promotions",
                "remember_for_s": 86400.0,
                "traceparent": None,
            }
            for i in range(start, start + n)
        ]
    )


async def intake(url: str, total: int) -> float:
    """Seconds to record `total` new marks."""
    per_connection = total // INTAKE_CONNECTIONS
    payloads = [
        [
            marks(c * per_connection + b, min(INTAKE_BATCH, per_connection - b))
            for b in range(0, per_connection, INTAKE_BATCH)
        ]
        for c in range(INTAKE_CONNECTIONS)
    ]

    async def write(batches: list[str]) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for batch in batches:
                params = {"marks": batch, "wake_queue": "dispatch", "wake_task": "noop"}
                await conn.execute(q("record_seen_marks"), params)

    t0 = time.perf_counter()
    await asyncio.gather(*(write(b) for b in payloads))
    took = time.perf_counter() - t0
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM seen_marks").fetchone()
    assert row is not None and row[0] == per_connection * INTAKE_CONNECTIONS, row
    return took


async def dispatch(url: str, rows: int) -> float:
    """Seconds to claim and complete `rows` pending rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO outbox (kind, consumer, ordering_key, payload, bucket)"
            " SELECT 'seen', 'promotions', 'client:u' || n, '{}', subject_bucket('client:u' || n)"
            " FROM generate_series(1, %s) AS n",
            [rows],
        )
        groups = [list(r[0]) for r in conn.execute(q("bucket_groups")).fetchall()]

    async def work(mine: list[list[int]]) -> int:
        done = 0
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for buckets in mine:
                while True:
                    claim = {
                        "consumer": "promotions",
                        "buckets": buckets,
                        "limit": BATCH,
                        "lease_s": 60.0,
                        "dispatcher": "bench",
                    }
                    claimed = await (await conn.execute(q("claim_outbox"), claim)).fetchall()
                    if not claimed:
                        break
                    n = len(claimed)
                    params: dict[str, object] = {
                        "buckets": buckets,
                        "ids": [r[0] for r in claimed],
                        "attempts": [r[4] for r in claimed],
                        "outcomes": ["delivered"] * n,
                        "delays_s": [0.0] * n,
                        "status_codes": [204] * n,
                        "errors": [None] * n,
                        "started_at": [datetime.now(UTC)] * n,
                        "durations_ms": [1.0] * n,
                        "providers": [None] * n,
                        "max_attempts": 10,
                        "max_age_s": None,
                        "consumer": "promotions",
                        "dispatcher": "bench",
                    }
                    await conn.execute(q("complete_outbox"), params)
                    done += n
        return done

    # One group on one server: both workers claim it side by side (SKIP LOCKED); on the
    # cluster the groups are dealt out.
    shares = [groups[w::WORKERS] or groups for w in range(WORKERS)]
    t0 = time.perf_counter()
    done = sum(await asyncio.gather(*(work(s) for s in shares)))
    took = time.perf_counter() - t0
    assert done == rows, (done, rows)
    return took


def fanout(url: str, users: int) -> float:
    """Seconds to materialize one event to `users` users."""
    sync_catalog(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(bq("fanout_seed_users"), {"users": users})
        t0 = time.perf_counter()
        params = {
            "producer": "bench",
            "idempotency_key": uuid.uuid4().hex,
            "type": "new_episode",
            "recipients": json.dumps({"all": True}),
            "data": json.dumps(EPISODE),
            "send_at": None,
            "chunk": 10_000,
        }
        row = conn.execute(q("accept_event"), params).fetchone()
        assert row is not None
        covered, done = asyncio.run(materialize_parallel(url, str(row[0]), 10_000, WORKERS))
        took = time.perf_counter() - t0
    assert done and covered == users, (covered, done)
    return took


def digest(url: str, items: int, users: int) -> float:
    """Seconds for flush_digests() to send `items` open items of `users` users."""
    sync_catalog(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(bq("fanout_seed_users"), {"users": users})
        conn.execute(bq("digest_seed_likes"), {"items": items, "recipients": users, "keys": 2})
        t0 = time.perf_counter()
        conn.execute("SELECT flush_digests()")
        took = time.perf_counter() - t0
        row = conn.execute(bq("digest_counts")).fetchone()
    assert row is not None and row[0] == 0 and row[1] == items, row
    return took


def measure(
    label: str, runs: int, single: str, cluster: str, work: Callable[[str], float], units: int
) -> tuple[str, list[Figure]]:
    rates: dict[str, list[float]] = {"single": [], "cluster": []}
    for _ in range(runs):
        with single_database(single) as url:
            rates["single"].append(units / work(url))
        with cluster_database(cluster) as url:
            rates["cluster"].append(units / work(url))
    ratios = [c / s for s, c in zip(rates["single"], rates["cluster"], strict=True)]
    print(f"{label}: single {rates['single']}, cluster {rates['cluster']}", flush=True)
    return label, [
        Figure("one PostgreSQL", "per s", rates["single"]),
        Figure("Citus", "per s", rates["cluster"]),
        Figure("Citus / one", "%", [100 * r for r in ratios]),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--citus", required=True, help="the coordinator's database URL")
    parser.add_argument("--single", help="a PostgreSQL server URL (default: DATABASE_URL)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--marks", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="a tenth of each, 1 run")
    parser.add_argument(
        "--only",
        action="append",
        choices=["intake", "intake-cached", "dispatch", "fanout", "digest"],
        help="a workload (default: all)",
    )
    parser.add_argument("--cached-conns", type=int, default=16, help="for intake-cached")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
        args.marks, args.rows, args.users, args.items = (
            n // 10 for n in (args.marks, args.rows, args.users, args.items)
        )
    single = args.single or server_url()
    migrate.upgrade(args.citus, mode="citus")
    # The same connections with Citus keeping N connections to each worker open between
    # statements (default 1): a statement that touches many shards opens one per shard.
    cached = f"citus.max_cached_conns_per_worker={args.cached_conns}"
    workloads: dict[str, tuple[str, Callable[[str], float], int]] = {
        "intake": (
            "intake (marks/s)",
            lambda url: asyncio.run(intake(url, args.marks)),
            args.marks,
        ),
        "intake-cached": (
            f"intake, {cached} (marks/s)",
            lambda url: asyncio.run(intake(with_options(url, cached), args.marks)),
            args.marks,
        ),
        "dispatch": (
            "dispatch (rows/s)",
            lambda url: asyncio.run(dispatch(url, args.rows)),
            args.rows,
        ),
        "fanout": ("fan-out (notifications/s)", lambda url: fanout(url, args.users), args.users),
        "digest": (
            "digest (items/s)",
            lambda url: digest(url, args.items, args.users // 2),
            args.items,
        ),
    }
    results = [
        measure(label, args.runs, single, args.citus, work, units)
        for name, (label, work, units) in workloads.items()
        if not args.only or name in args.only
    ]
    print_table(
        f"Citus (coordinator + 2 workers) against one PostgreSQL, median of {args.runs}",
        results,
    )


if __name__ == "__main__":
    main()
