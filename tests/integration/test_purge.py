"""Expired seen marks are forgotten on a schedule, by the dispatcher's periodic task."""

from __future__ import annotations

from typing import Any

import procrastinate
import psycopg

from dispatcher.jobs import PURGE_TASK
from service.seen.store import purge_expired_marks
from service.wake import WAKE_QUEUE
from tests.consumers import (
    add_marks,
    client,
    dispatch_config,
    http_consumer,
    running,
    scalar,
    wait_until,
)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def expire(db: Conn, item_ids: list[str]) -> None:
    await db.execute(
        "UPDATE seen_marks SET expires_at = now() - interval '1 second' WHERE item_id = ANY(%s)",
        [item_ids],
    )


async def count_marks(db: Conn) -> int:
    return int(await scalar(db, "SELECT count(*) FROM seen_marks"))


async def test_purge_works_through_a_backlog_in_chunks_and_keeps_live_marks(db: Conn) -> None:
    await add_marks(db, "promotions", "promotions", [(client(f"u{n}"), f"p{n}") for n in range(7)])
    await expire(db, [f"p{n}" for n in range(5)])
    assert await purge_expired_marks(db, chunk=2) == 5
    assert await count_marks(db) == 2
    assert await purge_expired_marks(db, chunk=2) == 0


async def test_a_running_dispatcher_purges_when_the_periodic_job_fires(
    db: Conn, db_url: str
) -> None:
    await add_marks(db, "promotions", "promotions", [(client("u1"), "old"), (client("u1"), "new")])
    await expire(db, ["old"])
    config = dispatch_config(db_url, {"promotions": http_consumer("http://127.0.0.1:9/x")})
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=db_url))
    async with running(config, db_url), app.open_async():
        # What Procrastinate's periodic deferrer does at each cron tick.
        await app.configure_task(PURGE_TASK, queue=WAKE_QUEUE).defer_async(timestamp=0)

        async def purged() -> bool:
            return await count_marks(db) == 1

        await wait_until(purged, 10, "the purge job to run")
    remaining = await scalar(db, "SELECT item_id FROM seen_marks")
    assert remaining == "new"
