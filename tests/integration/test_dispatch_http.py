"""The HTTP transport against a real consumer: shape, signature, retries, permanent failures."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import psycopg
import pytest

from dispatcher.retry import backoff_bound
from service.app import create_app
from service.config.base import Backoff
from service.seen.seen_wire import AnonymousSeenEvent, ClientSeenEvent, DriverSeenEvent
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
from tests.support import bearer, client_token, driver_token, make_config, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.mark.citus
async def test_seen_marks_reach_the_consumer_signed_in_their_documented_shapes(
    db: Conn, db_url: str
) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        # A sweep far longer than the test: only the write path's wake-up job can explain a
        # prompt delivery.
        config = make_config(
            db_url,
            consumers={
                "promotions": http_consumer(f"{base}/client"),
                "goals": http_consumer(f"{base}/driver"),
                "banners": http_consumer(f"{base}/anonymous"),
            },
            dispatcher={"sweep_interval": 600},
        )
        async with running(config, db_url), serve(create_app(config)) as api:
            await asyncio.sleep(0.3)  # let the loops' start-up claims pass
            async with httpx.AsyncClient(base_url=api) as http:
                posted = [
                    await http.post(
                        "/v1/seen",
                        json={"tag": "promotions", "id": "promo-1"},
                        headers=bearer(client_token("user-7", uid="42", bound_uids=["43"])),
                    ),
                    await http.post(
                        "/v1/seen",
                        json={"tag": "personal-goals", "id": "goal-1"},
                        headers=bearer(driver_token("park-9", "drv-9")),
                    ),
                    await http.post("/v1/seen", json={"tag": "banners", "id": "banner-1"}),
                ]
            assert [r.status_code for r in posted] == [200, 200, 200]

            async def all_arrived() -> bool:
                return len(consumer.accepted) == 3

            took = await wait_until(all_arrived, 10, "three deliveries")
            assert took < 5

    by_path = {r.path: r for r in consumer.requests}
    assert sorted(by_path) == ["/anonymous", "/client", "/driver"]
    assert all(r.verified for r in consumer.requests)
    cur = await db.execute("SELECT event_id::text, payload->>'tag', status FROM outbox")
    outbox = {tag: (event_id, status) for event_id, tag, status in await cur.fetchall()}
    assert {status for _, status in outbox.values()} == {"delivered"}

    c = by_path["/client"]
    assert c.webhook_id == outbox["promotions"][0]
    assert c.headers["content-type"] == "application/json"
    assert set(c.body) == {
        "event_type",
        "event_id",
        "tag",
        "id",
        "seen_at",
        "user_id",
        "uid",
        "bound_uids",
        "phone_id",
    }
    event = msgspec.json.decode(c.raw, type=ClientSeenEvent)
    assert (event.event_id, event.tag, event.id, event.user_id) == (
        c.webhook_id,
        "promotions",
        "promo-1",
        "user-7",
    )
    assert (event.uid, event.bound_uids, c.body["event_type"]) == ("42", ["43"], "client")

    d = by_path["/driver"]
    assert set(d.body) == {"event_type", "event_id", "tag", "id", "seen_at", "db_id", "uuid"}
    driver_event = msgspec.json.decode(d.raw, type=DriverSeenEvent)
    assert (driver_event.db_id, driver_event.uuid, d.body["event_type"]) == (
        "park-9",
        "drv-9",
        "driver",
    )

    a = by_path["/anonymous"]
    assert set(a.body) == {"event_type", "event_id", "tag", "id", "seen_at"}
    anonymous = msgspec.json.decode(a.raw, type=AnonymousSeenEvent)
    assert (anonymous.tag, anonymous.id) == ("banners", "banner-1")


@pytest.mark.citus
async def test_a_wrong_secret_fails_verification(db: Conn, db_url: str) -> None:
    """The signature is checked for real: a consumer holding another secret rejects it."""
    consumer = RecordingConsumer(secret="whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==")
    async with serve(consumer.app) as base:
        config = dispatch_config(db_url, {"promotions": http_consumer(f"{base}/x")})
        await add_marks(db, "promotions", "promotions", [(client("u1"), "i1")])
        async with running(config, db_url):

            async def arrived() -> bool:
                return bool(consumer.requests)

            await wait_until(arrived, 10, "a request")
    assert consumer.requests[0].verified is False


async def test_503_four_times_then_200_is_delivered_once_after_five_attempts(
    db: Conn, db_url: str
) -> None:
    async def flaky(received: Received) -> Reply:
        tries = sum(1 for r in consumer.requests if r.webhook_id == received.webhook_id)
        return (503, {}) if tries <= 4 else (200, {})

    consumer = RecordingConsumer(flaky)
    backoff = {"initial": 0.05, "factor": 2.0, "cap": 0.3}
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url,
            {"promotions": http_consumer(f"{base}/seen", backoff=backoff)},
        )
        await add_marks(db, "promotions", "promotions", [(client("u1"), "item-1")])
        async with running(config, db_url):

            async def delivered() -> bool:
                return (await outbox_status(db)).get("delivered") == 1

            await wait_until(delivered, 15, "the row to be delivered")
            await asyncio.sleep(0.3)  # room for a stray extra delivery to show up

    assert len(consumer.requests) == 5
    assert len({r.webhook_id for r in consumer.requests}) == 1
    assert len(consumer.accepted) == 1 and consumer.duplicates == 0

    cur = await db.execute(
        "SELECT a.attempt, a.outcome, a.status_code, a.error, a.started_at, a.duration_ms,"
        "       o.attempts, o.delivered_at IS NOT NULL"
        " FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id ORDER BY a.attempt"
    )
    attempts = await cur.fetchall()
    assert [(a[0], a[1], a[2]) for a in attempts] == [
        (1, "retry", 503),
        (2, "retry", 503),
        (3, "retry", 503),
        (4, "retry", 503),
        (5, "delivered", 200),
    ]
    assert all(a[3].startswith("HTTP 503") for a in attempts[:4]) and attempts[4][3] is None
    assert attempts[-1][6] == 5 and attempts[-1][7]
    bounds = Backoff(initial=timedelta(seconds=0.05), factor=2.0, cap=timedelta(seconds=0.3))
    for n, (before, after) in enumerate(itertools.pairwise(attempts), start=1):
        gap = (after[4] - before[4]).total_seconds() - before[5] / 1000.0
        # Equal jitter: never before bound / 2 (the row is not due). After the bound a
        # busy machine adds its own delay to the claim and wake-up, so the upper side only
        # catches a retry left to the sweep; the cap itself: tests/unit/test_dispatch_policy.py.
        bound = backoff_bound(bounds, n)
        assert bound / 2 - 0.01 <= gap <= bound + 2.0, (n, gap)


@pytest.mark.citus
async def test_retry_after_is_honoured(db: Conn, db_url: str) -> None:
    async def busy_once(received: Received) -> Reply:
        return (429, {"Retry-After": "1"}) if len(consumer.requests) == 1 else (200, {})

    consumer = RecordingConsumer(busy_once)
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url,
            {
                "promotions": http_consumer(
                    f"{base}/seen", backoff={"initial": 0.01, "factor": 2.0, "cap": 5}
                )
            },
        )
        await add_marks(db, "promotions", "promotions", [(client("u1"), "item-1")])
        async with running(config, db_url):

            async def delivered() -> bool:
                return (await outbox_status(db)).get("delivered") == 1

            await wait_until(delivered, 10, "delivery")
    first, second = consumer.requests
    assert 1.0 <= second.at - first.at < 2.5


@pytest.mark.citus
async def test_400_fails_after_one_attempt_and_redeliver_brings_it_back(
    db: Conn, db_url: str
) -> None:
    accepting = False

    async def picky(received: Received) -> Reply:
        return (200, {}) if accepting else (400, {})

    consumer = RecordingConsumer(picky)
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url,
            {"promotions": http_consumer(f"{base}/seen", max_attempts=10)},
            dispatcher={"sweep_interval": 600},
        )
        await add_marks(db, "promotions", "promotions", [(client("u1"), "item-1")])
        async with running(config, db_url):

            async def failed() -> bool:
                return (await outbox_status(db)).get("failed") == 1

            await wait_until(failed, 10, "the row to fail")
            cur = await db.execute(
                "SELECT attempt, outcome, status_code FROM delivery_attempts ORDER BY attempt"
            )
            assert await cur.fetchall() == [(1, "failed", 400)]

            dry = await _redeliver(db_url, "--consumer", "promotions", "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert "would requeue 1" in dry.stdout
            # A refused row is not one that ran out of retries.
            dead_only = await _redeliver(db_url, "--consumer", "promotions", "--status", "dead")
            assert dead_only.returncode == 0, dead_only.stderr
            assert "nothing to requeue" in dead_only.stdout
            assert (await outbox_status(db)) == {"failed": 1}

            accepting = True
            done = await _redeliver(db_url, "--consumer", "promotions", "--status", "failed")
            assert done.returncode == 0, done.stderr
            assert "requeued 1" in done.stdout

            async def delivered() -> bool:
                return (await outbox_status(db)).get("delivered") == 1

            # The sweep is 600 s: the requeue's wake-up job is what gets it going.
            await wait_until(delivered, 10, "redelivery")
            again = await _redeliver(db_url, "--consumer", "promotions", "--status", "failed")
            assert again.returncode == 0, again.stderr
            assert "nothing to requeue" in again.stdout

    assert len(consumer.accepted) == 1 and len(consumer.requests) == 2
    cur = await db.execute(
        "SELECT attempt, outcome, status_code FROM delivery_attempts ORDER BY attempt"
    )
    assert await cur.fetchall() == [(1, "failed", 400), (2, "delivered", 200)]
    assert (await outbox_status(db)) == {"delivered": 1}


@pytest.mark.citus
async def test_past_max_attempts_the_row_is_dead(db: Conn, db_url: str) -> None:
    async def down(received: Received) -> Reply:
        return 500, {}

    consumer = RecordingConsumer(down)
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url, {"promotions": http_consumer(f"{base}/seen", max_attempts=3)}
        )
        await add_marks(db, "promotions", "promotions", [(client("u1"), "item-1")])
        async with running(config, db_url):

            async def dead() -> bool:
                return (await outbox_status(db)).get("dead") == 1

            await wait_until(dead, 10, "the row to die")
            await asyncio.sleep(0.3)
    cur = await db.execute("SELECT attempt, outcome FROM delivery_attempts ORDER BY attempt")
    assert await cur.fetchall() == [(1, "retry"), (2, "retry"), (3, "dead")]
    assert len(consumer.requests) == 3


async def test_past_max_age_the_row_is_dead(db: Conn, db_url: str) -> None:
    async def down(received: Received) -> Reply:
        return 503, {}

    consumer = RecordingConsumer(down)
    async with serve(consumer.app) as base:
        config = dispatch_config(db_url, {"promotions": http_consumer(f"{base}/seen", max_age=0.5)})
        await add_marks(db, "promotions", "promotions", [(client("u1"), "item-1")])
        async with running(config, db_url):

            async def dead() -> bool:
                return (await outbox_status(db)).get("dead") == 1

            await wait_until(dead, 10, "the row to die")
    cur = await db.execute("SELECT outcome FROM delivery_attempts ORDER BY attempt DESC LIMIT 1")
    last = await cur.fetchone()
    assert last is not None and last[0] == "dead"
    assert len(consumer.requests) >= 2


async def _redeliver(db_url: str, *args: str) -> Any:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.ops.redeliver_cli",
        "--database-url",
        db_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()

    class Result:
        returncode = proc.returncode
        stdout = out.decode()
        stderr = err.decode()

    return Result()
