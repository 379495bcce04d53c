"""A dispatcher killed with SIGKILL mid-batch: another delivers its rows after the lease."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.config.base import ROOT
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
    to_toml,
    wait_until,
)
from tests.support import config_data, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
ROWS = 60
LEASE_S = 3.0


@pytest.mark.citus
async def test_rows_of_a_killed_dispatcher_are_delivered_by_another_after_the_lease(
    db: Conn, db_url: str, tmp_path: Path
) -> None:
    async def slow(received: Received) -> Reply:
        await asyncio.sleep(0.3)
        return 200, {}

    consumer = RecordingConsumer(slow)
    async with serve(consumer.app) as base:
        consumers = {
            "promotions": http_consumer(f"{base}/seen", timeout=1.0, concurrency=4, batch_size=8)
        }
        # batch 8 / concurrency 4 = 2 rounds of 1 s, plus 1 s: the lease stays at 3 s.
        dispatcher = {"lease": LEASE_S, "bucket_lease": LEASE_S, "sweep_interval": 0.5}
        data = config_data(db_url, consumers=consumers, dispatcher=dispatcher)
        data["tags"] = {k: data["tags"][k] for k in ("promotions", "notifications")}
        config_file = tmp_path / "dispatcher.toml"
        config_file.write_text(to_toml(data))
        await add_marks(
            db, "promotions", "promotions", [(client(f"u{n}"), f"i{n}") for n in range(ROWS)]
        )

        env = {k: v for k, v in os.environ.items() if not k.startswith("MARK_NOTIFY")} | {
            "MARK_NOTIFY_CONFIG": str(config_file),
            "DATABASE_URL": db_url,
        }
        victim = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dispatcher.main",
            "--name",
            "victim",
            cwd=ROOT,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:

            async def mid_batch() -> bool:
                return len(consumer.requests) >= 12

            await wait_until(mid_batch, 20, "the victim to be delivering")
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
        finally:
            if victim.returncode is None:
                victim.kill()
                await victim.wait()
        assert victim.returncode == -signal.SIGKILL

        cur = await db.execute(
            "SELECT id, claimed_until FROM outbox"
            " WHERE status = 'pending' AND claimed_by = 'victim' AND claimed_until > now()"
        )
        orphans: dict[int, Any] = dict(await cur.fetchall())
        assert orphans, "the victim should have died holding leased rows"
        delivered_before = (await outbox_status(db)).get("delivered", 0)
        assert 0 < delivered_before < ROWS

        # The victim died holding every bucket of the consumer.
        held = "SELECT count(*) FROM dispatch_leases WHERE holder = %s AND consumer = 'promotions'"
        assert await scalar(db, held, ["victim"]) == 64
        config = dispatch_config(db_url, consumers, dispatcher=dispatcher)
        async with running(config, db_url, name="rescuer"):

            async def all_delivered() -> bool:
                return (await outbox_status(db)) == {"delivered": ROWS}

            await wait_until(all_delivered, 60, "every row delivered", step=0.1)
            # Its buckets moved to the rescuer once their lease ran out.
            assert await scalar(db, held, ["rescuer"]) == 64
            assert await scalar(db, held, ["victim"]) == 0

    # The orphans were retried only once their lease had run out.
    cur = await db.execute(
        "SELECT outbox_id, min(started_at) FROM delivery_attempts"
        " WHERE outbox_id = ANY(%s) GROUP BY outbox_id",
        [list(orphans)],
    )
    for outbox_id, first_started in await cur.fetchall():
        assert first_started >= orphans[outbox_id], outbox_id
    # No row lost: the consumer accepted every event at least once.
    event_ids = {
        r[0] for r in await (await db.execute("SELECT event_id::text FROM outbox")).fetchall()
    }
    assert set(consumer.accepted) == event_ids
    # Only the rows the victim held when it died can have arrived twice.
    assert consumer.duplicates <= len(orphans)
    rescued = await scalar(
        db,
        "SELECT count(*) FROM outbox WHERE id = ANY(%s) AND claimed_by = 'rescuer'",
        [list(orphans)],
    )
    assert rescued == len(orphans)
    # The killed attempt left no attempts row (docs/reliability.md): it shows as a gap in
    # the attempt numbers, and still counts.
    cur = await db.execute(
        "SELECT o.attempts, array_agg(a.attempt ORDER BY a.attempt) FROM outbox o"
        " JOIN delivery_attempts a ON a.outbox_id = o.id WHERE o.id = ANY(%s)"
        " GROUP BY o.id, o.bucket, o.created_at",
        [list(orphans)],
    )
    for attempts, logged in await cur.fetchall():
        assert logged[-1] == attempts and len(logged) < attempts, (attempts, logged)
