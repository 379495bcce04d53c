"""How long revision 0009 (the shard key and day partitions) takes on a filled database.

A database at revision 0008 is seeded set-based with `--rows` outbox rows spread over the
last `--days` days (each with one attempt), as many seen marks, and half as many
notifications; then `upgrade 0009_shard_key` runs and is timed. Beside it, in the same
run and on a copy of the same data, the floor of any move of those rows: one
`CREATE TABLE ... AS SELECT` per table. Printed: seconds and rows per second for both, and
their ratio; the rows are counted again after the upgrade (none lost).

    .venv/bin/python -m bench.migration [--rows 1000000] [--days 30]
"""

from __future__ import annotations

import argparse
import time
from typing import LiteralString

import psycopg
from psycopg import sql

from bench.harness import Figure, print_table, server_url
from service import migrate
from service.database import with_dbname

SEED: list[LiteralString] = [
    """INSERT INTO outbox (kind, consumer, ordering_key, payload, status, created_at,
                          updated_at, attempts)
       SELECT 'seen', 'promotions', 'client:u' || mod(g, 50000), '{"id": 1}', 'delivered',
              now() - make_interval(secs => mod(g, %(days)s * 86400)),
              now() - make_interval(secs => mod(g, %(days)s * 86400)), 1
       FROM generate_series(1, %(rows)s) AS g""",
    """INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at, duration_ms,
                                     outcome)
       SELECT id, 1, consumer, created_at, 3.5, 'delivered' FROM outbox""",
    """INSERT INTO seen_marks (tag, item_id, subject_key, subject_kind, subject, expires_at)
       SELECT 'promotions', g::text, 'client:u' || mod(g, 50000), 'client', '{}',
              now() + interval '30 days'
       FROM generate_series(1, %(rows)s) AS g""",
    """INSERT INTO notifications (event_id, user_id, type, category)
       SELECT gen_random_uuid(), 'u' || g, 'new_episode', 'content'
       FROM generate_series(1, %(rows)s / 2) AS g""",
]
TABLES = ("outbox", "delivery_attempts", "seen_marks", "notifications")


def database(server: str, label: str) -> str:
    name = f"mn_bench_{label}_{int(time.time() * 1000)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(server, name)


def drop(server: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(str(name))))


def total(url: str) -> int:
    n = 0
    with psycopg.connect(url) as conn:
        for table in TABLES:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            assert row is not None
            n += int(row[0])
    return n


def seeded(server: str, label: str, rows: int, days: int) -> str:
    url = database(server, label)
    migrate.upgrade(url, "0008_preference_rule")
    with psycopg.connect(url) as conn:
        for statement in SEED:
            conn.execute(statement, {"rows": rows, "days": days})
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    server = server_url()
    upgraded = seeded(server, "mig", args.rows, args.days)
    floor = seeded(server, "copy", args.rows, args.days)
    try:
        before = total(upgraded)
        t0 = time.perf_counter()
        migrate.upgrade(upgraded, "0009_shard_key")
        took = time.perf_counter() - t0
        assert total(upgraded) == before, "rows lost in the upgrade"
        with psycopg.connect(floor) as conn:
            t0 = time.perf_counter()
            for table in TABLES:
                conn.execute(
                    sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                        sql.Identifier(f"{table}_copy"), sql.Identifier(table)
                    )
                )
            conn.commit()
            copied = time.perf_counter() - t0
    finally:
        drop(server, upgraded)
        drop(server, floor)
    print_table(
        f"Revision 0009 on {before:,} rows ({args.rows:,} outbox rows over {args.days} days)",
        [
            ("upgrade 0008 -> 0009", [Figure("time", "s", [took]),
                                      Figure("rows/s", "rows/s", [before / took])]),
            ("floor: CREATE TABLE AS per table", [Figure("time", "s", [copied]),
                                                  Figure("rows/s", "rows/s", [before / copied])]),
        ],
    )  # fmt: skip
    print(f"upgrade / floor: {took / copied:.2f}x")


if __name__ == "__main__":
    main()
