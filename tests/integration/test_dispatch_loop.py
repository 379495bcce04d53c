"""The consumer loop's own timing: completions written in the background are never lost
on a clean stop, and a lost wake-up does not strand rows while a consumer is busy."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

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
    wait_until,
)
from tests.support import serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def test_a_clean_stop_writes_every_completion_still_in_flight(db: Conn, db_url: str) -> None:
    async def slowish(received: Received) -> Reply:
        await asyncio.sleep(0.05)
        return 200, {}

    consumer = RecordingConsumer(slowish)
    marks = [(client(f"u{n}"), f"m{n}") for n in range(60)]
    await add_marks(db, "promotions", "promotions", marks)
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url,
            {"promotions": http_consumer(f"{base}/seen", batch_size=5, concurrency=5)},
        )
        async with running(config, db_url):

            async def some_delivered() -> bool:
                return len(consumer.accepted) >= 20

            await wait_until(some_delivered, 10, "a first part of the rows to be delivered")
        # Stopped mid-stream, with batches completing in the background: whatever the
        # consumer accepted is recorded as delivered, and nothing is left leased.
        accepted = len(consumer.accepted)
    status = await outbox_status(db)
    assert status.get("delivered", 0) == accepted
    assert status.get("pending", 0) == len(marks) - accepted
    cur = await db.execute("SELECT count(*) FROM outbox WHERE claimed_until > now()")
    assert await cur.fetchone() == (0,)


async def test_a_busy_consumer_picks_up_rows_whose_wake_up_was_lost(db: Conn, db_url: str) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        # A sweep far beyond the test: only the loop's own re-claims can find the row.
        config = dispatch_config(
            db_url,
            {"promotions": http_consumer(f"{base}/seen")},
            dispatcher={"sweep_interval": 600},
        )
        async with running(config, db_url):
            await add_marks(db, "promotions", "promotions", [(client("u1"), "first")])

            async def delivered(n: int) -> Any:
                async def check() -> bool:
                    return len(consumer.accepted) >= n

                return check

            await wait_until(await delivered(1), 5, "the first mark (woken as usual)")
            # What Procrastinate's worker can do: the NOTIFY arrives, but the job is gone
            # by the time it looks, so no wake-up reaches the dispatcher.
            async with db.transaction():
                await add_marks(db, "promotions", "promotions", [(client("u2"), "second")])
                await db.execute("DELETE FROM procrastinate_jobs WHERE status = 'todo'")
            took = await wait_until(await delivered(2), 2, "the mark whose wake-up was lost")
    assert took < 0.5
