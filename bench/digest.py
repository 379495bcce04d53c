"""Digests: flushing a backlog of due digest items, set-based SQL against a per-recipient loop.

    python -m bench.digest [--quick] [--items N] [--recipients R] [--keys K]
                           [--naive-recipients M] [--runs RUNS]

A template database is seeded once, set-based: R users (default 100,000; the mix of
contacts and preferences of fanout_seed_users) and N open `comment_likes` digest items
(default 1,000,000), each recipient's spread over K of their comments (default 2), by
actors from a pool of 1,000, with one event per like; all two hours old, so every digest
is due (digest_seed_likes in bench/queries.sql). Each run gets a fresh copy of it and times:
  1. **set-based**: service/schedule/digests.flush_due(), i.e. flush_digests(): one
     statement makes every notification and outbox row and stamps every item;
  2. **naive**: for each of M recipients (default 5,000, so N*M/R items): read their open
     items, group them by key in Python, work out the actors, read the newest like's data
     and the recipient's contacts and preferences, then insert an event, the notification
     and one outbox row per channel owed and stamp the items, one statement each,
     committing every 1,000 recipients; its rate is the per-recipient baseline.
Both rates (items/s) are printed, median of RUNS runs (min-max), with their ratio; after
the set-based run every item is counted as stamped, with one notification per digest.
The server is DATABASE_URL, else the embedded PostgreSQL in .data/pg-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.fanout import copy_of
from bench.harness import Figure, drop_database, fresh_database, print_table, server_url
from bench.sql import bq
from service.config.load import Config
from service.notify.catalog import catalog_params
from service.notify.templates import load_templates
from service.schedule.digests import flush_due
from service.sql import q
from tests.support import make_config

TYPE = "comment_likes"


def seed_template(server: str, recipients: int, items: int, keys: int) -> tuple[str, Config]:
    url = fresh_database(server, "digest_tpl")
    config = make_config(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(q("sync_notify_config"), catalog_params(config, load_templates(config)))
        t0 = time.perf_counter()
        conn.execute(bq("fanout_seed_users"), {"users": recipients})
        params = {"items": items, "recipients": recipients, "keys": keys}
        conn.execute(bq("digest_seed_likes"), params)
        conn.execute("VACUUM ANALYZE")
        print(
            f"seeded {recipients:,} users and {items:,} digest items in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    return url, config


async def _flush(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await flush_due(conn)


def set_based(url: str, items: int) -> tuple[float, int, dict[str, int]]:
    t0 = time.perf_counter()
    flushed = asyncio.run(_flush(url))
    took = time.perf_counter() - t0
    with psycopg.connect(url) as conn:
        row = conn.execute(bq("digest_counts")).fetchone()
    assert row is not None
    counted = {"open": row[0], "stamped": row[1], "notifications": row[2], "outbox": row[3]}
    assert counted["open"] == 0 and counted["stamped"] == items, counted
    assert counted["notifications"] == flushed, (counted, flushed)
    return took, flushed, counted


def naive(url: str, config: Config, recipients: int) -> tuple[float, int]:
    """The per-recipient loop: (seconds, items flushed) for `recipients` recipients."""
    settings = config.event_types[TYPE]
    policy = settings.digest
    assert policy is not None and policy.quiet and policy.max_wait and policy.max_items
    defaults = config.categories[settings.category].defaults
    kinds = {name: config.channels[name].kind for name in settings.channels}
    flushed_items = 0
    with psycopg.connect(url) as conn:
        users = [r[0] for r in conn.execute(bq("naive_digest_recipients"), {"limit": recipients})]
        conn.commit()
        t0 = time.perf_counter()
        for n, user_id in enumerate(users, 1):
            digests: dict[tuple[str, str], list[Any]] = defaultdict(list)
            for row in conn.execute(bq("naive_open_items"), {"user_id": user_id}):
                digests[(row[1], row[2])].append(row)
            facts = conn.execute(bq("naive_user_facts"), {"user_id": user_id}).fetchone()
            assert facts is not None
            email, _phone, devices, muted, switches, _quiet = facts
            now = datetime.now(UTC)
            for (type_, key), rows in digests.items():
                first_at, last_at = rows[0][5], rows[-1][5]
                due = min(last_at + policy.quiet, first_at + policy.max_wait)
                if due > now and len(rows) < policy.max_items:
                    continue
                actors = list(dict.fromkeys(r[3] for r in rows if r[3] is not None))
                latest = list(dict.fromkeys(r[3] for r in reversed(rows) if r[3] is not None))
                shown = actors[: policy.show_actors]
                last = conn.execute(bq("naive_event_data"), {"event_id": rows[-1][4]}).fetchone()
                assert last is not None
                data = {
                    "total": len(rows),
                    "actor_count": len(actors),
                    "first_actors": shown,
                    "last_actors": latest[: policy.show_actors],
                    "others": len(actors) - len(shown),
                    "digest_key": key,
                    "last": last[0],
                }
                suppressed: dict[str, str] = {}
                owed = []
                for channel, kind in kinds.items():
                    on = switches.get(settings.category, {}).get(channel, defaults.get(channel))
                    if muted:
                        suppressed[channel] = "muted"
                    elif on is False:
                        suppressed[channel] = "preference"
                    elif (kind == "email" and not email) or (kind == "push" and not devices):
                        suppressed[channel] = "no_contact"
                    else:
                        owed.append(channel)
                event_id = uuid.uuid4()
                conn.execute(bq("naive_insert_digest_event"), {"event_id": event_id, "type": type_})
                notification = conn.execute(
                    bq("naive_insert_digest_notification"),
                    {
                        "event_id": event_id,
                        "user_id": user_id,
                        "type": type_,
                        "category": settings.category,
                        "suppressed": json.dumps(suppressed) if suppressed else None,
                        "data": json.dumps(data),
                    },
                ).fetchone()
                assert notification is not None
                for channel in owed:
                    conn.execute(
                        bq("naive_insert_delivery"),
                        {
                            "channel": channel,
                            "user_id": user_id,
                            "notification_id": notification[0],
                        },
                    )
                conn.execute(
                    bq("naive_stamp_items"),
                    {"notification_id": notification[0], "ids": [r[0] for r in rows]},
                )
                flushed_items += len(rows)
            if n % 1000 == 0:
                conn.commit()
        conn.commit()
        return time.perf_counter() - t0, flushed_items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--naive-recipients", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="100,000 items, 10,000 recipients, 1 run"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.recipients, args.naive_recipients, args.runs = 100_000, 10_000, 1_000, 1
    server = server_url()
    template, config = seed_template(server, args.recipients, args.items, args.keys)
    seconds: list[float] = []
    rates: list[float] = []
    naive_rates: list[float] = []
    try:
        for run in range(args.runs):
            with copy_of(server, template, "digest") as url:
                took, flushed, rows = set_based(url, args.items)
            seconds.append(took)
            rates.append(args.items / took)
            with copy_of(server, template, "digest") as url:
                naive_s, naive_items = naive(url, config, args.naive_recipients)
            naive_rates.append(naive_items / naive_s)
            print(
                f"run {run + 1}: set-based {args.items:,} items in {took:.1f} s ({flushed:,} "
                f"digests, {rows['outbox']:,} outbox rows); naive {naive_items:,} items in "
                f"{naive_s:.1f} s ({naive_rates[-1]:,.0f} items/s)"
            )
    finally:
        drop_database(server, template)
    print_table(
        f"Digest flush of {args.items:,} items for {args.recipients:,} recipients "
        f"(naive: {args.naive_recipients:,} recipients)",
        [
            ("set-based flush_digests()", [Figure("items/s", "1/s", rates)]),
            ("naive per-recipient loop", [Figure("items/s", "1/s", naive_rates)]),
        ],
    )
    med = sorted(seconds)[len(seconds) // 2]
    ratio = sorted(rates)[len(rates) // 2] / sorted(naive_rates)[len(naive_rates) // 2]
    print(
        f"set-based: {args.items:,} items flushed in {med:.1f} s (median); "
        f"{ratio:.1f}x the naive per-recipient rate"
    )


if __name__ == "__main__":
    main()
