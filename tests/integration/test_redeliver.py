"""Redelivery and the row states: a refused row is `failed`, one out of retries `dead`,
everywhere (the table, the stats view, bin/redeliver --status, retention), and every
requeue leaves one audit row."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

from service.config.schedule import RetentionSettings
from service.ops import redeliver
from service.ops import redeliver_cli as cli
from service.ops.cli import cli_actor
from service.ops.redeliver import RedeliverFilter
from service.schedule.retention import prune
from service.wake import WAKE_QUEUE
from tests.consumers import (
    Received,
    RecordingConsumer,
    Reply,
    add_marks,
    client,
    dispatch_config,
    http_consumer,
    outbox_status,
    running,
    scalar,
    wait_until,
)
from tests.support import serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def run_cli(capsys: pytest.CaptureFixture[str], db_url: str, *args: str) -> tuple[int, str]:
    """bin/redeliver in this process (in a thread: it runs its own event loop); code and stdout."""
    code = await asyncio.to_thread(cli.main, ["--database-url", db_url, *args])
    return code, capsys.readouterr().out


async def add_row(
    db: Conn,
    status: str,
    *,
    consumer: str = "promotions",
    tag: str | None = "promotions",
    notification_type: str | None = None,
    created_ago: timedelta = timedelta(hours=1),
) -> int:
    """An outbox row in this state, as the dispatcher would have left it."""
    notification_id = None
    if notification_type is not None:
        notification_id = await scalar(
            db,
            "INSERT INTO notifications (event_id, user_id, type, category, bucket)"
            " VALUES (gen_random_uuid(), 'anna', %s, 'content', user_bucket('anna'))"
            " RETURNING id",
            [notification_type],
        )
    payload = {"tag": tag} if tag else {}
    # A notification's rows are its user's, in the user's bucket, as the fan-out makes them.
    subject = "anna" if notification_type else "k"
    return int(
        await scalar(
            db,
            "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, attempts,"
            " created_at, notification_id, last_error, bucket)"
            " VALUES (%s, %s, %s, %s, %s, 3, now() - %s, %s,"
            "         CASE WHEN %s IN ('failed', 'dead') THEN 'HTTP 400' END,"
            "         CASE WHEN %s = 'notification' THEN user_bucket(%s)"
            "              ELSE subject_bucket(%s) END)"
            " RETURNING id",
            [
                "notification" if notification_type else "seen",
                consumer,
                subject,
                json.dumps(payload),
                status,
                created_ago,
                notification_id,
                status,
                "notification" if notification_type else "seen",
                subject,
                subject,
            ],
        )
    )


async def audit_rows(db: Conn) -> list[tuple[Any, ...]]:
    cur = await db.execute("SELECT actor, action, target, before, after FROM audit_log ORDER BY id")
    return list(await cur.fetchall())


async def status_of(db: Conn, row_id: int) -> str:
    return str(await scalar(db, "SELECT status FROM outbox WHERE id = %s", [row_id]))


@pytest.mark.citus
async def test_status_dead_takes_what_ran_out_of_retries_and_failed_what_was_refused(
    db: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def answer(received: Received) -> Reply:
        # One mark the consumer refuses for good, one it never manages to take.
        return (400, {}) if received.body["id"] == "refused" else (503, {})

    consumer = RecordingConsumer(answer)
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url, {"promotions": http_consumer(f"{base}/seen", max_attempts=2)}
        )
        await add_marks(
            db, "promotions", "promotions", [(client("u1"), "refused"), (client("u1"), "tired")]
        )
        async with running(config, db_url):

            async def settled() -> bool:
                return await outbox_status(db) == {"failed": 1, "dead": 1}

            await wait_until(settled, 10, "one failed and one dead row")

    cur = await db.execute("SELECT failed, dead, pending FROM outbox_consumer_stats")
    assert await cur.fetchall() == [(1, 1, 0)]
    cur = await db.execute("SELECT payload ->> 'id', id FROM outbox")
    ids: dict[str, int] = dict(await cur.fetchall())

    code, out = await run_cli(
        capsys, db_url, "--consumer", "promotions", "--status", "dead", "--dry-run"
    )
    assert code == 0
    assert f"would requeue 1 rows (dry run, nothing changed): ids {ids['tired']}" in out
    code, out = await run_cli(capsys, db_url, "--consumer", "promotions", "--status", "dead")
    assert code == 0 and "requeued 1 rows" in out
    assert await status_of(db, ids["tired"]) == "pending"
    assert await status_of(db, ids["refused"]) == "failed"

    code, out = await run_cli(capsys, db_url, "--consumer", "promotions", "--status", "failed")
    assert code == 0 and "requeued 1 rows" in out
    assert await outbox_status(db) == {"pending": 2}
    code, out = await run_cli(capsys, db_url, "--consumer", "promotions")
    assert code == 0 and "nothing to requeue" in out

    # One audit row per requeue, none for a dry run or for nothing; the dispatchers woken.
    rows = await audit_rows(db)
    assert [(actor, action) for actor, action, *_ in rows] == [(cli_actor(), "redeliver")] * 2
    (_, _, dead_target, dead_before, dead_after), (_, _, _, failed_before, failed_after) = rows
    assert json.loads(dead_target) == {
        "consumers": ["promotions"],
        "statuses": ["dead"],
        "rows": 1,
    }
    assert dead_before == {"dead": {"promotions": 1}}
    assert failed_before == {"failed": {"promotions": 1}}
    assert dead_after == failed_after == {"requeued": 1, "by_consumer": {"promotions": 1}}
    wakes = await scalar(
        db,
        "SELECT count(*) FROM procrastinate_jobs"
        " WHERE queue_name = %s AND args ->> 'consumer' = 'promotions' AND status = 'todo'",
        [WAKE_QUEUE],
    )
    assert wakes == 1


@pytest.mark.citus
async def test_the_selection_takes_only_requeueable_rows_and_every_filter_narrows_it(
    db: Conn,
) -> None:
    failed = await add_row(db, "failed")
    dead = await add_row(db, "dead", tag="cashback")
    delivered = await add_row(db, "delivered")
    await add_row(db, "pending")
    await add_row(db, "suppressed")
    old_dead = await add_row(db, "dead", created_ago=timedelta(days=3))
    sms = await add_row(db, "dead", consumer="sms", tag=None, notification_type="payment_receipt")
    await add_row(db, "dead", consumer="email", tag=None, notification_type="new_episode")

    async def ids(flt: RedeliverFilter, limit: int | None = None) -> list[int]:
        return [c.id for c in await redeliver.candidates(db, flt, limit)]

    assert await ids(RedeliverFilter(consumers=("promotions",))) == [failed, dead, old_dead]
    assert await ids(RedeliverFilter(consumers=("promotions",), statuses=("delivered",))) == [
        delivered
    ]
    assert await ids(RedeliverFilter(tags=("cashback",))) == [dead]
    assert await ids(RedeliverFilter(event_types=("payment_receipt",))) == [sms]
    an_hour_ago = datetime.now(UTC) - timedelta(hours=2)
    assert await ids(RedeliverFilter(consumers=("promotions",), since=an_hour_ago)) == [
        failed,
        dead,
    ]
    assert await ids(RedeliverFilter(consumers=("promotions",), until=an_hour_ago)) == [old_dead]
    assert await ids(RedeliverFilter(ids=(failed, delivered))) == [failed]
    assert await ids(RedeliverFilter(consumers=("promotions",)), limit=1) == [failed]
    # Empty means "any", as an unticked filter in a form does.
    assert len(await ids(RedeliverFilter(consumers=(), statuses=("failed", "dead")))) == 5

    [candidate] = await redeliver.candidates(db, RedeliverFilter(ids=(sms,)))
    assert (candidate.consumer, candidate.tag, candidate.event_type, candidate.status) == (
        "sms",
        None,
        "payment_receipt",
        "dead",
    )
    assert (candidate.attempts, candidate.last_error) == (3, "HTTP 400")


@pytest.mark.citus
async def test_requeue_is_one_transaction_with_its_audit_row_and_harmless_twice(
    db: Conn,
) -> None:
    failed = await add_row(db, "failed")
    dead = await add_row(db, "dead", consumer="sms", tag=None, notification_type="new_episode")
    delivered = await add_row(db, "delivered")
    pending = await add_row(db, "pending")

    done = await redeliver.requeue(
        db, [failed, dead, pending], "alice", chosen_by=None, client_ip="10.0.0.7"
    )
    assert done.by_consumer == {"promotions": 1, "sms": 1} and done.total == 2
    assert done.before == {"failed": {"promotions": 1}, "dead": {"sms": 1}}
    assert [await status_of(db, i) for i in (failed, dead, delivered, pending)] == [
        "pending",
        "pending",
        "delivered",
        "pending",
    ]
    cur = await db.execute(
        "SELECT attempt_base, requeued_at IS NOT NULL, last_error FROM outbox WHERE id = %s",
        [failed],
    )
    assert await cur.fetchone() == (3, True, None)

    # Limited to some states, a row in another is left alone.
    nothing = await redeliver.requeue(db, [delivered], "alice", statuses=("failed", "dead"))
    assert nothing.total == 0 and await status_of(db, delivered) == "delivered"
    again = await redeliver.requeue(db, [failed, dead], "alice")
    assert again.total == 0

    rows = await audit_rows(db)
    assert [(actor, action) for actor, action, *_ in rows] == [("alice", "redeliver")] * 3
    first_target = json.loads(rows[0][2])
    assert first_target == {
        "ids": sorted([failed, dead, pending]),
        "statuses": ["failed", "dead", "delivered"],
        "rows": 3,
    }
    assert rows[0][4] == {"requeued": 2, "by_consumer": {"promotions": 1, "sms": 1}}
    assert rows[2][4] == {"requeued": 0, "by_consumer": {}}
    ip = await scalar(db, "SELECT client_ip FROM audit_log ORDER BY id LIMIT 1")
    assert ip == "10.0.0.7"


@pytest.mark.citus
async def test_a_failed_requeue_leaves_neither_rows_nor_audit_behind(db: Conn) -> None:
    row = await add_row(db, "dead")
    with pytest.raises(psycopg.errors.NotNullViolation):
        # An audit row without an actor cannot be written: the requeue goes with it.
        await redeliver.requeue(db, [row], None)  # type: ignore[arg-type]
    assert await status_of(db, row) == "dead"
    assert await audit_rows(db) == []


@pytest.mark.citus
def test_a_filter_names_only_states_that_can_be_requeued() -> None:
    with pytest.raises(ValueError, match="'pending' cannot be requeued"):
        RedeliverFilter(statuses=("pending",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        RedeliverFilter(statuses=())
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"statuses": ["suppressed"]}, RedeliverFilter)
    loaded = msgspec.convert(
        {"consumers": ["cashback"], "since": "2024-05-01T10:00:00Z"}, RedeliverFilter
    )
    assert loaded.statuses == ("failed", "dead") and loaded.narrowed()
    assert not RedeliverFilter().narrowed()


@pytest.mark.citus
def test_the_help_speaks_the_row_states_and_the_example_configs_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.parse(["--help"])
    text = capsys.readouterr().out
    assert "{failed,dead,delivered}" in text
    assert "--consumer cashback" in text and "--tag cashback-offers" in text
    with pytest.raises(SystemExit) as refused:
        cli.parse(["--consumer", "cashback", "--status", "pending"])
    assert refused.value.code == 2
    with pytest.raises(SystemExit):
        cli.parse([])
    assert "give a filter" in capsys.readouterr().err


async def test_retention_prunes_failed_rows_as_dead_letters(db: Conn) -> None:
    async def aged(status: str, days: int) -> int:
        row = await add_row(db, status)
        await db.execute(
            "UPDATE outbox SET updated_at = now() - %s WHERE id = %s", [timedelta(days=days), row]
        )
        return row

    await aged("failed", 31)
    young_failed = await aged("failed", 29)
    await aged("dead", 31)
    pruned = await prune(db, RetentionSettings())
    assert pruned["dead"] == 2
    cur = await db.execute("SELECT id FROM outbox ORDER BY id")
    assert [r[0] for r in await cur.fetchall()] == [young_failed]
