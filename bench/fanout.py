"""Fan-out: one event to a large audience, set-based SQL against a per-user insert loop.

    python -m bench.fanout [--quick] [--users N] [--naive-users M] [--runs R] [--chunk C]
                           [--workers W]

A template database is seeded once with N users (default 1,000,000; see
fanout_seed_users in bench/queries.sql for the mix of contacts and preferences). Each run
gets a fresh copy of it and posts one `new_episode` event (push, inbox, email) to
`recipients: all`, then times until the event is fully materialized as notifications and
outbox rows:
  1. **set-based**: notify_event(), then the dispatcher's notify.materialize task's own
     code (service/notify/fanout.py): W workers (default 2) claim chunks of C users and
     materialize each with one INSERT ... SELECT, side by side;
  2. **naive**: for each of M users (default 20,000), read the user's contacts and
     preferences, insert its notification, then one outbox row per channel owed, one
     statement each, committing every 1,000 users; its rate is the per-user baseline.
Both rates are printed (median of R runs, min-max) with their ratio, and the set-based
run's notifications and outbox rows are counted so that nothing is claimed that was not
written. The server is DATABASE_URL, else the embedded PostgreSQL in .data/pg-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from bench.harness import Figure, drop_database, fresh_database, print_table, server_url
from bench.sql import bq
from service.database import with_dbname
from service.notify.catalog import catalog_params
from service.notify.fanout import FANOUT_WORKERS, materialize_parallel
from service.notify.templates import load_templates
from service.sql import q
from tests.support import make_config

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/3"}
CHANNELS = ("push", "inbox", "email")


def seed_template(server: str, users: int) -> str:
    url = fresh_database(server, "fanout_tpl")
    config = make_config(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(q("sync_notify_config"), catalog_params(config, load_templates(config)))
        t0 = time.perf_counter()
        conn.execute(bq("fanout_seed_users"), {"users": users})
        conn.execute("VACUUM ANALYZE")
        print(f"seeded {users:,} users in {time.perf_counter() - t0:.1f} s")
    return url


@contextmanager
def copy_of(server: str, template_url: str, label: str = "fanout") -> Iterator[str]:
    template = str(psycopg.conninfo.conninfo_to_dict(template_url)["dbname"])
    name = f"mn_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL(bq("fanout_create_database_from")).format(
                name=sql.Identifier(name), template=sql.Identifier(template)
            )
        )
    url = with_dbname(server, name)
    try:
        yield url
    finally:
        drop_database(server, url)


def set_based(url: str, chunk: int, workers: int, users: int) -> tuple[float, dict[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        cur = conn.execute(
            q("accept_event"),
            {
                "producer": "bench",
                "idempotency_key": uuid.uuid4().hex,
                "type": "new_episode",
                "recipients": json.dumps({"all": True}),
                "data": json.dumps(EPISODE),
                "send_at": None,
                "chunk": chunk,
            },
        )
        row = cur.fetchone()
        assert row is not None
        covered, done = asyncio.run(materialize_parallel(url, str(row[0]), chunk, workers))
        assert done and covered == users, (covered, done)
        took = time.perf_counter() - t0
        counted = conn.execute(bq("fanout_counts")).fetchone()
        assert counted is not None
    return took, {"notifications": int(counted[0]), "outbox": int(counted[1])}


def naive(url: str, users: int) -> float:
    """The per-user loop; seconds for `users` users."""
    event_id = uuid.uuid4()
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute(bq("naive_user_ids"), {"limit": users}).fetchall()]
        conn.commit()
        t0 = time.perf_counter()
        for n, user_id in enumerate(ids, 1):
            facts = conn.execute(bq("naive_user_facts"), {"user_id": user_id}).fetchone()
            assert facts is not None
            email, _phone, devices, muted, channels, _quiet = facts
            suppressed: dict[str, str] = {}
            owed = []
            for channel in CHANNELS:
                if muted:
                    suppressed[channel] = "muted"
                elif channels.get("content", {}).get(channel) is False:
                    suppressed[channel] = "preference"
                elif (channel == "email" and not email) or (channel == "push" and not devices):
                    suppressed[channel] = "no_contact"
                else:
                    owed.append(channel)
            cur = conn.execute(
                bq("naive_insert_notification"),
                {
                    "event_id": event_id,
                    "user_id": user_id,
                    "type": "new_episode",
                    "category": "content",
                    "suppressed": json.dumps(suppressed) if suppressed else None,
                },
            )
            notification = cur.fetchone()
            assert notification is not None
            for channel in owed:
                conn.execute(
                    bq("naive_insert_delivery"),
                    {"channel": channel, "user_id": user_id, "notification_id": notification[0]},
                )
            if n % 1000 == 0:
                conn.commit()
        conn.commit()
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--naive-users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=FANOUT_WORKERS)
    parser.add_argument("--quick", action="store_true", help="50,000 users, 2,000 naive, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.naive_users, args.runs = 50_000, 2_000, 1
    server = server_url()
    template = seed_template(server, args.users)
    seconds: list[float] = []
    rates: list[float] = []
    naive_rates: list[float] = []
    rows: dict[str, Any] = {}
    try:
        for run in range(args.runs):
            with copy_of(server, template) as url:
                took, rows = set_based(url, args.chunk, args.workers, args.users)
            seconds.append(took)
            rates.append(args.users / took)
            with copy_of(server, template) as url:
                naive_rates.append(args.naive_users / naive(url, args.naive_users))
            print(
                f"run {run + 1}: set-based {args.users:,} users in {took:.1f} s "
                f"({rows['notifications']:,} notifications, {rows['outbox']:,} outbox rows); "
                f"naive {naive_rates[-1]:,.0f} users/s"
            )
    finally:
        drop_database(server, template)
    print_table(
        f"Fan-out of one event to {args.users:,} users (naive: {args.naive_users:,} users)",
        [
            (f"set-based, {args.workers} workers", [Figure("users/s", "1/s", rates)]),
            ("naive per-user inserts", [Figure("users/s", "1/s", naive_rates)]),
        ],
    )
    med = sorted(seconds)[len(seconds) // 2]
    ratio = sorted(rates)[len(rates) // 2] / sorted(naive_rates)[len(naive_rates) // 2]
    print(
        f"set-based: {args.users:,} users materialized in {med:.1f} s (median); "
        f"{ratio:.1f}x the naive per-user rate"
    )


if __name__ == "__main__":
    main()
