"""Day partitions: rows land in their day, the days ahead are made in advance, and
retention drops a whole day only when none of its rows is pending and all are past
their age."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from service import migrate
from service.config.schedule import RetentionSettings
from service.schedule.retention import prune
from service.sql import q
from tests.consumers import scalar
from tests.plain_role import plain_role

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# On the Citus cluster too (`pytest --citus`): retention by day and by row, group by group.
pytestmark = pytest.mark.citus


def of(query: LiteralString, table: str) -> sql.Composed:
    return sql.SQL(query).format(sql.Identifier(table))


async def partitions(db: Conn, parent: str) -> list[str]:
    cur = await db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1",
        [parent],
    )
    return [r[0] for r in await cur.fetchall()]


async def add_day(
    db: Conn, days_ago: int, statuses: list[str], consumer: str = "promotions"
) -> str:
    """Rows of a day `days_ago` days back, each with one attempt of that day, last changed
    then; returns the day's outbox partition."""
    day = await scalar(db, "SELECT (now() AT TIME ZONE 'UTC')::date - %s", [days_ago])
    for parent in ("outbox", "delivery_attempts"):
        await db.execute("SELECT ensure_partitions(%s, %s, %s)", [parent, day, day])
    kind = "seen" if consumer == "promotions" else "notification"
    for n, status in enumerate(statuses):
        key = f"subject-{days_ago}-{n}"
        await db.execute(
            "WITH row AS ("
            "  INSERT INTO outbox (bucket, kind, consumer, ordering_key, payload, status,"
            "                      created_at, updated_at)"
            "  VALUES (subject_bucket(%(key)s), %(kind)s, %(consumer)s, %(key)s, '{}',"
            "          %(status)s, %(at)s, %(at)s)"
            "  RETURNING id, bucket, created_at)"
            " INSERT INTO delivery_attempts (outbox_id, bucket, attempt, consumer, started_at,"
            "                                duration_ms, outcome)"
            " SELECT id, bucket, 1, %(consumer)s, created_at, 5, 'retry' FROM row",
            {
                "key": key,
                "kind": kind,
                "consumer": consumer,
                "status": status,
                "at": f"{day} 12:00:00+00",
            },
        )
    return f"outbox_p{day:%Y_%m_%d}"


async def test_rows_land_in_their_day_and_a_week_ahead_is_made(db: Conn) -> None:
    today = await scalar(db, "SELECT (now() AT TIME ZONE 'UTC')::date")
    days = await partitions(db, "outbox")
    expected = [f"outbox_p{today + timedelta(days=n):%Y_%m_%d}" for n in range(8)]
    # pg_partman, where the server has it, also makes a week back.
    assert {*expected, "outbox_default"} <= set(days)
    assert await scalar(db, q("maintain_partitions")) == 0  # already there
    await db.execute(
        "INSERT INTO outbox (bucket, kind, consumer, ordering_key, payload)"
        " VALUES (subject_bucket('u1'), 'seen', 'promotions', 'u1', '{}')"
    )
    assert await scalar(db, of("SELECT count(*) FROM {}", f"outbox_p{today:%Y_%m_%d}")) == 1
    assert await scalar(db, "SELECT count(*) FROM outbox_default") == 0


async def test_retention_drops_only_whole_days_with_nothing_pending_or_kept(db: Conn) -> None:
    settings = RetentionSettings()  # delivered 7 d, dead 30 d, attempts 30 d, inbox 90 d
    done = await add_day(db, 10, ["delivered", "suppressed", "delivered"])
    waiting = await add_day(db, 11, ["delivered", "pending"])
    young_dead = await add_day(db, 12, ["delivered", "dead"])
    old_dead = await add_day(db, 40, ["failed", "delivered"])
    await db.execute(
        "INSERT INTO notify_channels (name, kind) VALUES ('inbox', 'inbox')"
        " ON CONFLICT (name) DO UPDATE SET kind = 'inbox'"
    )
    inbox = await add_day(db, 13, ["delivered"], consumer="inbox")
    recent = await add_day(db, 3, ["delivered"])
    await db.commit()

    await db.set_autocommit(True)
    totals = await prune(db, settings)
    left = await partitions(db, "outbox")
    assert done not in left and old_dead not in left
    assert {waiting, young_dead, inbox, recent} <= set(left)
    assert totals["days"] >= 2
    # In the days kept, the row-by-row prune took the delivered rows past their age (one
    # each of `waiting` and `young_dead`); the pending row, the young dead letter and the
    # inbox row stay.
    assert totals["delivered"] == 2
    assert await scalar(db, of("SELECT array_agg(status) FROM {}", waiting)) == ["pending"]
    assert await scalar(db, of("SELECT array_agg(status) FROM {}", young_dead)) == ["dead"]
    assert await scalar(db, of("SELECT count(*) FROM {}", inbox)) == 1
    # Attempts days go after `attempts` (30 d), unless one is of a pending row.
    attempts = await partitions(db, "delivery_attempts")
    assert old_dead.replace("outbox", "delivery_attempts") not in attempts
    assert done.replace("outbox", "delivery_attempts") in attempts


async def test_an_attempts_day_of_a_pending_row_or_a_dead_letter_is_kept(db: Conn) -> None:
    pending = await add_day(db, 45, ["pending"])
    dead = await add_day(db, 46, ["dead"])
    await db.execute(
        "UPDATE outbox SET updated_at = now() - interval '1 day' WHERE status = 'dead'"
    )
    await db.commit()
    await db.set_autocommit(True)
    await prune(db, RetentionSettings())
    days = await partitions(db, "outbox")
    attempts = await partitions(db, "delivery_attempts")
    for day in (pending, dead):
        assert day in days
        assert day.replace("outbox", "delivery_attempts") in attempts


async def test_a_row_made_pending_again_keeps_its_day(db: Conn) -> None:
    """bin/redeliver requeues a dead letter of an old day: the day is no longer dropped."""
    day = await add_day(db, 50, ["dead"])
    await db.execute("UPDATE outbox SET status = 'pending' WHERE status = 'dead'")
    await db.commit()
    dropped = await db.execute(q("drop_retained_partitions"), _ages(RetentionSettings()))
    assert await dropped.fetchall() == []
    assert day in await partitions(db, "outbox")


def _ages(settings: RetentionSettings) -> dict[str, Any]:
    return {
        "delivered": settings.delivered,
        "inbox": settings.inbox,
        "dead": settings.dead,
        "attempts": settings.attempts,
    }


async def test_pg_partman_keeps_the_days_where_the_database_has_it(db: Conn) -> None:
    schema = await scalar(
        db,
        "SELECT coalesce((SELECT extnamespace::regnamespace::text FROM pg_extension"
        " WHERE extname = 'pg_partman'), '')",
    )
    if not schema:
        pytest.skip("this server has no pg_partman (the built-in maintainer keeps the days)")
    cur = await db.execute(
        sql.SQL(
            "SELECT parent_table, control, partition_interval, premake, retention,"
            " infinite_time_partitions"
            " FROM {}.part_config ORDER BY 1"
        ).format(sql.Identifier(schema))
    )
    assert await cur.fetchall() == [
        ("public.delivery_attempts", "started_at", "1 day", 7, None, True),
        ("public.outbox", "created_at", "1 day", 7, None, True),
    ]
    # Retention stays ours: a day past its age goes, a day with a pending row stays.
    done = await add_day(db, 5, ["delivered"])
    waiting = await add_day(db, 6, ["pending"])
    await db.execute("UPDATE outbox SET updated_at = now() - interval '3 days'")
    short = RetentionSettings(delivered=timedelta(days=2))
    await prune(db, short)
    days = await partitions(db, "outbox")
    assert done not in days and waiting in days


def test_a_plain_role_uses_pg_partman_only_with_its_grants(pg_server_url: str) -> None:
    """A role that cannot use pg_partman still migrates (the built-in maintainer makes the
    days, and a warning says why); with docs/scaling.md's grants, pg_partman takes over."""
    with psycopg.connect(pg_server_url) as conn:
        available = "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'"
        if not conn.execute(available).fetchone():
            pytest.skip("this server has no pg_partman")
    with plain_role(pg_server_url, migrated=False) as role:
        admin = make_conninfo(role.admin_url, dbname=role.name)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA partman")
            conn.execute("CREATE EXTENSION pg_partman SCHEMA partman")
        migrate.upgrade(role.url)
        registered = "SELECT parent_table FROM partman.part_config ORDER BY 1"
        today = "to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM_DD')"
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute(registered).fetchall() == []
            assert conn.execute(f"SELECT to_regclass('outbox_p' || {today})").fetchone() != (None,)
            name = sql.Identifier(role.name)
            for grant in (
                "GRANT ALL ON SCHEMA partman TO {}",
                "GRANT ALL ON ALL TABLES IN SCHEMA partman TO {}",
                "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA partman TO {}",
                "GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA partman TO {}",
            ):
                conn.execute(sql.SQL(grant).format(name))
        with psycopg.connect(role.url, autocommit=True) as conn:
            conn.execute("SELECT maintain_partitions()")
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute(registered).fetchall() == [
                ("public.delivery_attempts",),
                ("public.outbox",),
            ]


async def test_the_procedure_pg_cron_calls_drops_days_one_per_transaction(db: Conn) -> None:
    days = [await add_day(db, n, ["delivered"]) for n in (20, 21, 22)]
    await db.execute(
        "CALL prune_retention(delivered => '7 days', inbox => '90 days', dead => '30 days',"
        " attempts => '30 days', digest_items => '7 days', batch_size => 250,"
        " pause => '0')"
    )
    assert set(days).isdisjoint(await partitions(db, "outbox"))
