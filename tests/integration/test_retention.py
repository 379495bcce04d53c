"""Retention: finished rows past their age are pruned in bounded batches that skip, never
wait for, rows another transaction holds; pending rows are never touched."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from service.config.schedule import RetentionSettings
from service.schedule.retention import params, prune
from service.sql import q
from tests.consumers import scalar

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# On the Citus cluster too (`pytest --citus`): retention by day and by row, group by group.
pytestmark = pytest.mark.citus

DEFAULTS = RetentionSettings()  # delivered 7 d, inbox 90 d, dead 30 d, attempts 30 d


async def add_row(
    db: Conn,
    status: str,
    age: timedelta,
    *,
    consumer: str = "promotions",
    attempts_age: tuple[timedelta, ...] = (),
) -> int:
    """An outbox row last changed `age` ago, with one attempt per entry of attempts_age;
    in u1's bucket, as are the digest items (one group of buckets, one shard on Citus)."""
    kind = "seen" if consumer == "promotions" else "notification"
    row_id = int(
        await scalar(
            db,
            "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, created_at,"
            " updated_at, delivered_at, bucket)"
            " VALUES (%s, %s, 'client:u1', '{}', %s, now() - %s - interval '1 hour', now() - %s,"
            "         CASE WHEN %s = 'delivered' THEN now() - %s END, user_bucket('u1'))"
            " RETURNING id",
            [kind, consumer, status, age, age, status, age],
        )
    )
    for n, attempt_age in enumerate(attempts_age, start=1):
        await db.execute(
            "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at,"
            " duration_ms, outcome, updated_at, bucket)"
            " VALUES (%s, %s, %s, now() - %s, 5, 'retry', now() - %s,"
            "         user_bucket('u1'))",  # the row's bucket
            [row_id, n, consumer, attempt_age, attempt_age],
        )
    return row_id


async def group_count(db: Conn) -> int:
    """The groups of buckets the prune goes through, a batch at least for each: one on one
    server, one per shard on Citus."""
    return int(await scalar(db, "SELECT count(*) FROM bucket_groups()"))


async def add_digest_item(db: Conn, age: timedelta, *, flushed: bool) -> int:
    """A digest item made `age` ago, flushed into a notification then if `flushed`."""
    return int(
        await scalar(
            db,
            "INSERT INTO digest_items (event_id, user_id, type, digest_key, created_at,"
            " notification_id, flushed_at, bucket)"
            " VALUES (gen_random_uuid(), 'u1', 'comment_likes', 'c1', now() - %s,"
            "         CASE WHEN %s THEN 1 END, CASE WHEN %s THEN now() - %s END,"
            "         user_bucket('u1'))"
            " RETURNING id",
            [age, flushed, flushed, age],
        )
    )


async def ids(db: Conn, table: str) -> set[int]:
    query = {
        "outbox": "SELECT id FROM outbox",
        "digest_items": "SELECT id FROM digest_items",
        "attempts": "SELECT outbox_id FROM delivery_attempts",
    }[table]
    cur = await db.execute(query)
    return {int(r[0]) for r in await cur.fetchall()}


async def attempts_of(db: Conn, row_id: int) -> int:
    return int(
        await scalar(db, "SELECT count(*) FROM delivery_attempts WHERE outbox_id = %s", [row_id])
    )


def days(n: float) -> timedelta:
    return timedelta(days=n)


async def call_procedure(db: Conn, settings: RetentionSettings) -> None:
    await db.execute(q("call_prune_retention"), params(settings))


@pytest.mark.parametrize("driver", ["python", "procedure"])
async def test_what_is_past_its_age_goes_and_the_rest_stays(db: Conn, driver: str) -> None:
    await db.execute(
        "INSERT INTO notify_channels (name, kind) VALUES ('inbox', 'inbox'), ('email', 'email')"
    )
    old_delivered = await add_row(db, "delivered", days(8), attempts_age=(days(8.1), days(8)))
    old_suppressed = await add_row(db, "suppressed", days(8), consumer="email")
    old_email = await add_row(db, "delivered", days(8), consumer="email", attempts_age=(days(8),))
    young_delivered = await add_row(db, "delivered", days(6), attempts_age=(days(6),))
    # A disabled consumer's row waits however old it is, and so do its attempts.
    old_pending = await add_row(db, "pending", days(60), attempts_age=(days(60),))
    # Dead rows stay longer, with all their attempts (even those older than `attempts`).
    young_dead = await add_row(db, "dead", days(29), attempts_age=(days(35), days(29)))
    old_dead = await add_row(db, "dead", days(31), attempts_age=(days(32), days(31)))
    # Inbox rows are the inbox: kept for `inbox`, their attempts only for `attempts`.
    inbox_row = await add_row(db, "delivered", days(8), consumer="inbox", attempts_age=(days(8),))
    inbox_aged = await add_row(
        db, "delivered", days(40), consumer="inbox", attempts_age=(days(40),)
    )
    inbox_gone = await add_row(
        db, "delivered", days(91), consumer="inbox", attempts_age=(days(91),)
    )
    old_item = await add_digest_item(db, days(8), flushed=True)
    young_item = await add_digest_item(db, days(6), flushed=True)
    open_item = await add_digest_item(db, days(100), flushed=False)

    groups = await group_count(db)
    if driver == "python":
        pruned = await prune(db, DEFAULTS)
        assert pruned == {
            "delivered": 4,  # old_delivered, old_suppressed, old_email, inbox_gone
            "dead": 1,
            "attempts": 2 + 1 + 2 + 1 + 1,  # with their rows, and inbox_aged's
            "digest_items": 1,
            "inbox_changes": 0,
            "batches": groups,
            "days": 0,  # these rows are in no day partition (test_partitions.py has those)
        }
    else:
        await call_procedure(db, DEFAULTS)

    assert await ids(db, "outbox") == {
        young_delivered,
        old_pending,
        young_dead,
        inbox_row,
        inbox_aged,
    }
    assert {old_delivered, old_suppressed, old_email, old_dead, inbox_gone}.isdisjoint(
        await ids(db, "outbox")
    )
    assert await ids(db, "attempts") == {young_delivered, old_pending, young_dead, inbox_row}
    assert await attempts_of(db, young_dead) == 2
    assert await ids(db, "digest_items") == {young_item, open_item}
    assert old_item not in await ids(db, "digest_items")

    # The prune's asynchronous commits stay its own: the session commits as before.
    assert await scalar(db, "SHOW synchronous_commit") == "on"
    # Nothing is left past its age: a second prune finds nothing.
    if driver == "python":
        assert await prune(db, DEFAULTS) == dict.fromkeys(
            ["delivered", "dead", "attempts", "digest_items", "inbox_changes"], 0
        ) | {"batches": groups, "days": 0}


async def test_a_batch_is_bounded_and_takes_the_oldest_first(db: Conn) -> None:
    # Two consumers, their rows interleaved in age: rows[n] is n minutes younger than rows[0].
    rows = [
        await add_row(
            db,
            "delivered",
            days(8) - timedelta(minutes=n),
            consumer=("promotions", "email")[n % 2],
            attempts_age=(days(8),),
        )
        for n in range(25)
    ]
    items = [
        await add_digest_item(db, days(8) - timedelta(minutes=n), flushed=True) for n in range(12)
    ]
    small = RetentionSettings(batch_size=10)

    # The group of the rows' bucket: on Citus a batch is routed to one shard.
    group = await scalar(db, "SELECT g FROM bucket_groups() AS g WHERE user_bucket('u1') = ANY(g)")
    cur = await db.execute(q("prune_retention_batch"), params(small, buckets=list(group)))
    batch = {kind: (pruned, full) for kind, pruned, full, _ in await cur.fetchall()}
    assert batch["delivered"] == (10, True)
    assert batch["digest_items"] == (10, True)
    # The ten oldest went, across both consumers.
    assert await ids(db, "outbox") == set(rows[10:])
    assert await ids(db, "digest_items") == set(items[10:])

    pruned = await prune(db, small)
    assert pruned["delivered"] == 15
    assert pruned["attempts"] == 15
    assert pruned["digest_items"] == 2
    # 10 and then 5: a short batch ends the prune (and one batch in every other group).
    assert pruned["batches"] == 2 + await group_count(db) - 1
    assert await ids(db, "outbox") == set()
    assert await ids(db, "attempts") == set()


@pytest.mark.parametrize("driver", ["python", "procedure"])
async def test_rows_of_one_instant_are_all_pruned_across_batches(db: Conn, driver: str) -> None:
    # One statement marks a whole claim delivered at one now(): a batch boundary falls
    # inside such a group, and the next batch starts where the last one got to. Then a
    # second group, microseconds younger.
    for age, rows in (("8 days", 15), ("8 days - 1 microsecond", 13)):
        await db.execute(
            "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, updated_at,"
            " bucket)"
            " SELECT 'seen', 'promotions', 'k', '{}', 'delivered', now() - %s::interval,"
            " subject_bucket('k')"
            " FROM generate_series(1, %s)",
            [age, rows],
        )
    small = RetentionSettings(batch_size=10)
    if driver == "python":
        pruned = await prune(db, small)
        assert (pruned["delivered"], pruned["batches"]) == (28, 3 + await group_count(db) - 1)
    else:
        await call_procedure(db, small)
    assert await ids(db, "outbox") == set()


async def test_a_row_another_transaction_holds_is_skipped_not_waited_for(
    db: Conn, db_url: str
) -> None:
    rows = [await add_row(db, "delivered", days(8), attempts_age=(days(8),)) for _ in range(3)]
    dead = await add_row(db, "dead", days(31))
    item = await add_digest_item(db, days(8), flushed=True)
    async with await psycopg.AsyncConnection.connect(db_url) as holder:
        # As bin/redeliver holds the rows it is about to requeue, until it commits.
        await holder.execute(
            "SELECT id FROM outbox WHERE id = ANY(%s) AND bucket = user_bucket('u1') FOR UPDATE",
            [[rows[1], dead]],
        )
        await holder.execute(
            "SELECT id FROM digest_items WHERE id = %s AND bucket = user_bucket('u1') FOR UPDATE",
            [item],
        )

        pruned = await asyncio.wait_for(prune(db, DEFAULTS), timeout=5)
        assert (pruned["delivered"], pruned["dead"], pruned["digest_items"]) == (2, 0, 0)
        assert pruned["attempts"] == 2
        assert await ids(db, "outbox") == {rows[1], dead}
        # The held row keeps its attempts: they go with the row, not before it.
        assert await attempts_of(db, rows[1]) == 1
        await holder.rollback()

    pruned = await prune(db, DEFAULTS)
    assert (pruned["delivered"], pruned["dead"], pruned["digest_items"]) == (1, 1, 1)
    assert await ids(db, "outbox") == set()
    assert await ids(db, "attempts") == set()


async def test_the_procedure_commits_batch_by_batch(db: Conn, db_url: str) -> None:
    for n in range(25):
        await add_row(db, "delivered", days(8) + timedelta(minutes=n))
    small = RetentionSettings(batch_size=10, pause=timedelta(milliseconds=10))

    # Inside a transaction block it cannot commit after its first batch, and says so.
    async with await psycopg.AsyncConnection.connect(db_url) as in_transaction:
        with pytest.raises(psycopg.errors.InvalidTransactionTermination):
            await call_procedure(in_transaction, small)
    assert await scalar(db, "SELECT count(*) FROM outbox") == 25

    await call_procedure(db, small)
    assert await scalar(db, "SELECT count(*) FROM outbox") == 0


async def test_prune_refuses_a_connection_inside_a_transaction(db: Conn, db_url: str) -> None:
    await add_row(db, "delivered", days(8))
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        with pytest.raises(ValueError, match="autocommit"):
            await prune(conn, DEFAULTS)
    assert await scalar(db, "SELECT count(*) FROM outbox") == 1


@pytest.mark.parametrize("driver", ["python", "procedure"])
async def test_the_live_inboxs_change_log_is_kept_as_long_as_a_stream_may_resume(
    db: Conn, driver: str
) -> None:
    await db.execute(
        "INSERT INTO inbox_changes (user_id, item_id, change, created_at)"
        " SELECT 'anna', n::text, 'seen', now() - interval '25 hours' - n * interval '1 second'"
        " FROM generate_series(1, 25) AS n"
    )
    await db.execute(
        "INSERT INTO inbox_changes (user_id, item_id, change, created_at)"
        " VALUES ('anna', 'young', 'item', now() - interval '23 hours')"
    )
    small = RetentionSettings(batch_size=10)
    if driver == "python":
        assert (await prune(db, small))["inbox_changes"] == 25
    else:
        await call_procedure(db, small)
    cur = await db.execute("SELECT item_id FROM inbox_changes")
    assert await cur.fetchall() == [("young",)]
