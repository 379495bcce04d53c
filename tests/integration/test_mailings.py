"""The SQL behind mailings: audience sizes, and cancelling an event before, during and
after its fan-out (cancel_event() and the fan-out functions that skip a cancelled event)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from service.notify.fanout import materialize_event, materialize_parallel
from service.sql import q
from tests.integration.test_fanout import EPISODE, accept, add_user, setup

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def one(db: Conn, query: Any, params: Any = None) -> Any:
    cur = await db.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


async def audience_size(db: Conn, recipients: dict[str, Any]) -> int:
    return int(await one(db, q("admin_audience_size"), {"recipients": json.dumps(recipients)}))


async def cancel(db: Conn, event_id: str) -> tuple[str, int, bool]:
    previous, suppressed, removed = await one(db, q("admin_cancel_event"), {"event_id": event_id})
    return previous, int(suppressed), bool(removed)


async def outbox_of(db: Conn, event_id: str) -> dict[tuple[str, str | None], int]:
    cur = await db.execute(
        "SELECT o.status, o.reason, count(*) FROM outbox AS o"
        " JOIN notifications AS n ON n.id = o.notification_id WHERE n.event_id = %s"
        " GROUP BY 1, 2",
        (event_id,),
    )
    return {(status, reason): n for status, reason, n in await cur.fetchall()}


async def event_state(db: Conn, event_id: str) -> tuple[str, int]:
    status, notified = await one(
        db, "SELECT status, notified FROM events WHERE id = %s", (event_id,)
    )
    return status, int(notified)


async def jobs_of(db: Conn, event_id: str) -> int:
    return int(
        await one(
            db,
            "SELECT count(*) FROM procrastinate_jobs WHERE queueing_lock = %s",
            (f"materialize:{event_id}",),
        )
    )


async def members(db: Conn, count: int, topic: str = "dark") -> None:
    for n in range(count):
        await add_user(db, f"u{n:04}", email=f"u{n}@example.com", topics=(topic,))


async def test_audience_size_counts_whom_the_fan_out_would_reach(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await members(db, 3)
    await add_user(db, "loner", email="loner@example.com", topics=("other",))
    await add_user(db, "quiet")
    assert await audience_size(db, {"all": True}) == 5
    assert await audience_size(db, {"topic": "dark"}) == 3
    assert await audience_size(db, {"topic": "other"}) == 1
    assert await audience_size(db, {"topic": "nobody-follows-this"}) == 0
    # Listed ids count only when they are known users, each once.
    listed = {"user_ids": ["u0000", "loner", "ghost", "u0000"]}
    assert await audience_size(db, listed) == 2


async def test_audience_size_of_an_empty_database_is_zero(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    assert await audience_size(db, {"all": True}) == 0


async def test_cancel_in_progress_suppresses_pending_rows_and_stops_the_fan_out(
    db: Conn, db_url: str
) -> None:
    await setup(db, db_url)
    await members(db, 250)
    event_id, status, _ = await accept(db, "new_episode", {"topic": "dark"}, EPISODE)
    assert status == "materializing" and await jobs_of(db, event_id) == 1
    # One chunk of 100 is fanned out (email and inbox each: no devices, so no push),
    # and one of those deliveries has gone out already.
    lo, hi = await one(db, q("claim_chunk"), {"event_id": event_id, "chunk": 100})
    assert await one(db, q("materialize_range"), {"event_id": event_id, "lo": lo, "hi": hi}) == 100
    await db.execute(
        "UPDATE outbox SET status = 'delivered', delivered_at = now()"
        " WHERE id = (SELECT min(id) FROM outbox WHERE consumer = 'email')"
    )

    assert await cancel(db, event_id) == ("materializing", 199, True)
    assert await event_state(db, event_id) == ("cancelled", 100)
    assert await jobs_of(db, event_id) == 0
    assert await outbox_of(db, event_id) == {
        ("delivered", None): 1,
        ("suppressed", "cancelled"): 199,
    }
    # The rest of the audience is never materialized, by any path.
    assert await materialize_event(db, event_id, 100) == 0
    assert await materialize_parallel(db_url, event_id, 100) == (0, True)
    assert await event_state(db, event_id) == ("cancelled", 100)
    assert (
        await one(db, "SELECT count(*) FROM notifications WHERE event_id = %s", (event_id,)) == 100
    )
    # The status the API and the admin show counts them as suppressed, cancelled.
    cur = await db.execute(
        q("event_status"),
        {"event_id": event_id, "producer": "content", "seen_tag": "notifications"},
    )
    shown = await cur.fetchone()
    assert shown is not None
    channels = shown[-1]
    assert (channels["email"]["sent"], channels["email"]["queued"]) == (1, 0)
    assert channels["email"]["suppressed"] == {"cancelled": 99}
    assert channels["inbox"]["suppressed"] == {"cancelled": 100}
    # Cancelling again changes nothing.
    assert await cancel(db, event_id) == ("cancelled", 0, False)


async def test_a_chunk_claimed_before_the_cancel_adds_nothing_after_it(
    db: Conn, db_url: str
) -> None:
    await setup(db, db_url)
    await members(db, 30)
    event_id, _, _ = await accept(db, "new_episode", {"topic": "dark"}, EPISODE)
    lo, hi = await one(db, q("claim_chunk"), {"event_id": event_id, "chunk": 10})
    assert await cancel(db, event_id) == ("materializing", 0, True)
    assert await one(db, q("materialize_range"), {"event_id": event_id, "lo": lo, "hi": hi}) == 0
    assert await one(db, "SELECT count(*) FROM notifications WHERE event_id = %s", (event_id,)) == 0
    cur = await db.execute(q("claim_chunk"), {"event_id": event_id, "chunk": 10})
    assert await cur.fetchall() == []
    assert await one(db, q("finish_event"), {"event_id": event_id}) is True
    assert await event_state(db, event_id) == ("cancelled", 0)


async def test_cancel_waits_for_a_chunk_in_flight_and_suppresses_its_rows(
    db: Conn, db_url: str
) -> None:
    await setup(db, db_url)
    await members(db, 20)
    event_id, _, _ = await accept(db, "new_episode", {"topic": "dark"}, EPISODE)
    lo, hi = await one(db, q("claim_chunk"), {"event_id": event_id, "chunk": 20})
    async with await psycopg.AsyncConnection.connect(db_url) as worker:
        # A fan-out worker's chunk, not committed yet.
        cur = await worker.execute(
            q("materialize_range"), {"event_id": event_id, "lo": lo, "hi": hi}
        )
        assert (await cur.fetchone()) == (20,)
        cancelling = asyncio.create_task(cancel(db, event_id))
        await asyncio.sleep(0.3)
        assert not cancelling.done()  # it waits for the chunk
        await worker.commit()
        assert await cancelling == ("materializing", 40, True)
    assert await outbox_of(db, event_id) == {("suppressed", "cancelled"): 40}


async def test_cancel_of_a_scheduled_event_removes_its_job(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await members(db, 5)
    later = datetime.now(UTC) + timedelta(hours=1)
    event_id, status, _ = await accept(
        db, "new_episode", {"user_ids": ["u0000", "u0001"]}, EPISODE, send_at=later
    )
    assert status == "scheduled" and await jobs_of(db, event_id) == 1
    assert await cancel(db, event_id) == ("scheduled", 0, True)
    assert await jobs_of(db, event_id) == 0
    # Should a worker have taken the job already, its run does nothing.
    assert await materialize_event(db, event_id, 100) == 0
    assert await event_state(db, event_id) == ("cancelled", 0)
    assert await outbox_of(db, event_id) == {}


async def test_an_event_that_went_out_stays_done(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await members(db, 2)
    event_id, status, _ = await accept(db, "new_episode", {"user_ids": ["u0000"]}, EPISODE)
    assert status == "done"
    await db.execute(
        "UPDATE outbox SET status = 'delivered' WHERE notification_id IN"
        " (SELECT id FROM notifications WHERE event_id = %s)",
        (event_id,),
    )
    assert await cancel(db, event_id) == ("done", 0, False)
    assert await event_state(db, event_id) == ("done", 1)
    cur = await db.execute(
        q("admin_cancel_event"), {"event_id": "00000000-0000-0000-0000-000000000000"}
    )
    assert await cur.fetchall() == []
