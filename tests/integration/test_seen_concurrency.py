"""Concurrency on POST /v1/seen: idempotency under races, and group commit.

To make group commit certain rather than a matter of timing, some tests first fill every
committer slot with a slow "blocker" write (a trigger sleeps on their rows, a stand-in for
a slow commit): requests sent meanwhile have to queue, and the first free slot writes
them together in one statement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from service.app import create_app
from service.config.load import Config
from service.seen.store import GroupCommitter
from tests.support import bearer, client_token, make_config, seen_counts, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

SLOW_BLOCKERS = """
CREATE FUNCTION test_slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.4);
    RETURN NEW;
END $$;
CREATE TRIGGER test_slow BEFORE INSERT ON seen_marks
    FOR EACH ROW WHEN (NEW.item_id LIKE 'blocker-%') EXECUTE FUNCTION test_slow_row();
"""

POISON = """
CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'poisoned item %', NEW.item_id;
END $$;
CREATE TRIGGER test_poison BEFORE INSERT ON seen_marks
    FOR EACH ROW WHEN (NEW.item_id = 'poison') EXECUTE FUNCTION test_poison();
"""


class Api:
    def __init__(self, app: Starlette, client: httpx.AsyncClient, config: Config) -> None:
        self.app = app
        self.client = client
        self.slots = max(1, config.database.pool_max // 2)  # as service.app.group_committer

    @property
    def committer(self) -> GroupCommitter:
        committer = self.app.state.mn.committer
        assert isinstance(committer, GroupCommitter)
        return committer

    async def seen(self, tag: str, item: str, user: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"} | (
            bearer(client_token(user)) if user else {}
        )
        return await self.client.post(
            "/v1/seen", json={"tag": tag, "id": item}, headers=headers, timeout=30
        )


@asynccontextmanager
async def running(db_url: str) -> AsyncIterator[Api]:
    config = make_config(db_url)
    app = create_app(config)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, limits=limits) as client:
        yield Api(app, client, config)


async def slots_busy(db: Conn, count: int) -> None:
    """Wait until `count` statements are inside the slow trigger (a bound of 30 s: on a
    busy machine 2 s was not enough for the requests to reach it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cur = await db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event = 'PgSleep'"
        )
        row = await cur.fetchone()
        if row and row[0] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} statements never got busy")


async def occupy_slots(api: Api, db: Conn) -> list[asyncio.Task[httpx.Response]]:
    """Fill every committer slot with a slow write, so what comes next has to queue.

    The database needs SLOW_BLOCKERS; the blockers are cashback marks (consumer promotions).
    """
    blockers = []
    for n in range(api.slots):
        # One at a time: requests that arrive together would share one slot.
        blockers.append(asyncio.create_task(api.seen("cashback", f"blocker-{n}", f"blocker-{n}")))
        await slots_busy(db, n + 1)
    return blockers


async def gather(requests: Sequence[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    return list(await asyncio.gather(*requests))


@pytest.mark.citus
async def test_20_concurrent_identical_requests(db_url: str, db: Conn) -> None:
    async with running(db_url) as api:
        responses = await gather([api.seen("promotions", "promo-1", "user-1") for _ in range(20)])
    assert [r.status_code for r in responses] == [200] * 20
    statuses = Counter(r.json()["status"] for r in responses)
    assert statuses == {"recorded": 1, "duplicate": 19}
    assert await seen_counts(db) == (1, 1, 1)


async def test_20_identical_requests_in_one_group_commit(db_url: str, db: Conn) -> None:
    await db.execute(SLOW_BLOCKERS)
    async with running(db_url) as api:
        blockers = await occupy_slots(api, db)
        responses = await gather([api.seen("promotions", "promo-1", "user-1") for _ in range(20)])
        assert [b.status_code for b in await gather(blockers)] == [200] * api.slots
        transactions = api.committer.transactions
    assert [r.status_code for r in responses] == [200] * 20
    # One statement wrote the mark for all 20: it is "recorded" for one of them only.
    assert Counter(r.json()["status"] for r in responses) == {"recorded": 1, "duplicate": 19}
    assert transactions < api.slots + 20
    cur = await db.execute(
        "SELECT count(*) FROM seen_marks WHERE item_id = 'promo-1'"
        " UNION ALL SELECT count(*) FROM outbox WHERE payload->>'id' = 'promo-1'"
    )
    assert await cur.fetchall() == [(1,), (1,)]
    assert await seen_counts(db) == (api.slots + 1, api.slots + 1, 1)


async def test_many_users_share_transactions(db_url: str, db: Conn) -> None:
    users = 60
    await db.execute(SLOW_BLOCKERS)
    async with running(db_url) as api:
        blockers = await occupy_slots(api, db)
        responses = await gather(
            [api.seen("promotions", "promo-1", f"user-{n}") for n in range(users)]
        )
        assert [b.status_code for b in await gather(blockers)] == [200] * api.slots
        transactions = api.committer.transactions - api.slots
    assert [r.status_code for r in responses] == [200] * users
    assert all(r.json()["status"] == "recorded" for r in responses)
    assert 1 <= transactions < users
    cur = await db.execute(
        "SELECT count(DISTINCT m.subject_key), count(o.id), count(DISTINCT o.ordering_key)"
        " FROM seen_marks m JOIN outbox o ON o.id = m.outbox_id WHERE m.tag = 'promotions'"
    )
    assert await cur.fetchone() == (users, users, users)
    assert await seen_counts(db) == (users + api.slots, users + api.slots, 1)


@pytest.mark.citus
async def test_many_users_without_slowdown(db_url: str, db: Conn) -> None:
    users = 100
    async with running(db_url) as api:
        responses = await gather(
            [api.seen("promotions", f"promo-{n % 7}", f"user-{n}") for n in range(users)]
            + [api.seen("personal-goals", "g", f"user-{n}") for n in range(5)]
        )
        transactions = api.committer.transactions
    assert [r.status_code for r in responses[:users]] == [200] * users
    assert all(r.json()["status"] == "recorded" for r in responses[:users])
    # Refusals are answered without touching the database.
    assert {r.json()["code"] for r in responses[users:]} == {"wrong_event_type"}
    assert 1 <= transactions <= users
    assert await seen_counts(db) == (users, users, 1)


async def test_a_poisoned_request_fails_alone(
    db_url: str, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    await db.execute(SLOW_BLOCKERS)
    await db.execute(POISON)
    caplog.set_level(logging.WARNING, logger="service.seen.store")
    async with running(db_url) as api:
        blockers = await occupy_slots(api, db)
        good = [api.seen("promotions", f"promo-{n}", f"user-{n}") for n in range(10)]
        responses = await gather([*good[:5], api.seen("promotions", "poison", "user-x"), *good[5:]])
        await gather(blockers)
    poisoned = responses.pop(5)
    assert poisoned.status_code == 500
    assert poisoned.json() == {
        "code": "internal_error",
        "message": "An unexpected error; nothing was stored.",
    }
    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.json()["status"] == "recorded" for r in responses)
    # They were in one shared statement, which failed and was retried request by request.
    assert any(
        r.name == "service.seen.store" and "group commit of 11 requests failed" in r.getMessage()
        for r in caplog.records
    )
    cur = await db.execute("SELECT item_id FROM seen_marks WHERE tag = 'promotions' ORDER BY 1")
    assert await cur.fetchall() == [(f"promo-{n}",) for n in range(10)]
    # Blockers (cashback) and promotions share one consumer, so one wake-up job.
    assert await seen_counts(db) == (10 + api.slots, 10 + api.slots, 1)
