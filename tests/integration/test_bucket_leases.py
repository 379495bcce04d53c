"""Bucket leases: dispatchers split a consumer's buckets, take over a dead one's, and the
per-subject order and the one-claim-per-row rule hold while buckets move."""

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
    scalar,
    wait_until,
)
from tests.support import serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def lease(
    db: Conn, holder: str, consumers: list[str], lease_s: float
) -> dict[str, list[int]]:
    cur = await db.execute(
        "SELECT consumer, buckets FROM lease_buckets(%s, %s, %s)", [holder, consumers, lease_s]
    )
    return {consumer: list(buckets) for consumer, buckets in await cur.fetchall()}


async def test_dispatchers_share_the_buckets_fairly_and_never_the_same_bucket(db: Conn) -> None:
    first = await lease(db, "d1", ["promotions", "goals"], 30)
    assert first == {"promotions": list(range(64)), "goals": list(range(64))}
    # A newcomer gets nothing until the holder gives back what is above its share...
    assert await lease(db, "d2", ["promotions"], 30) == {"promotions": []}
    again = await lease(db, "d1", ["promotions", "goals"], 30)
    assert len(again["promotions"]) == 32 and again["goals"] == list(range(64))
    # ... and takes it on its next renewal.
    second = await lease(db, "d2", ["promotions"], 30)
    assert len(second["promotions"]) == 32
    assert set(second["promotions"]).isdisjoint(again["promotions"])
    await lease(db, "d3", ["promotions"], 30)
    await lease(db, "d1", ["promotions", "goals"], 30)
    await lease(db, "d2", ["promotions"], 30)
    third = await lease(db, "d3", ["promotions"], 30)
    held = await db.execute(
        "SELECT holder, count(*) FROM dispatch_leases WHERE consumer = 'promotions'"
        " GROUP BY holder ORDER BY holder"
    )
    # ceil(64 / 3) = 22 each at most; every bucket held once.
    assert await held.fetchall() == [("d1", 22), ("d2", 22), ("d3", 20)]
    assert len(third["promotions"]) == 20


async def test_a_dead_dispatchers_buckets_are_taken_over_once_its_lease_ends(db: Conn) -> None:
    await lease(db, "dead", ["promotions"], 1.0)
    await lease(db, "alive", ["promotions"], 1.0)
    await lease(db, "dead", ["promotions"], 1.0)  # gives back half: both hold 32
    assert len((await lease(db, "alive", ["promotions"], 1.0))["promotions"]) == 32

    # "dead" stops renewing; "alive" goes on as its keeper does, a third of the lease apart.
    async def all_mine() -> bool:
        return len((await lease(db, "alive", ["promotions"], 1.0))["promotions"]) == 64

    await wait_until(all_mine, 5, "the dead dispatcher's buckets taken over", step=1 / 3)
    members = await scalar(db, "SELECT array_agg(holder) FROM dispatch_members")
    assert members == ["alive"]


async def test_a_stopping_dispatcher_gives_its_buckets_back_at_once(db: Conn) -> None:
    await lease(db, "leaving", ["promotions"], 60)
    await db.execute("SELECT release_buckets('leaving')")
    # No wait for the 60 s lease: a newcomer takes every bucket on its first call.
    assert await lease(db, "newcomer", ["promotions"], 60) == {"promotions": list(range(64))}


async def test_order_and_single_delivery_hold_while_buckets_move(db: Conn, db_url: str) -> None:
    """An ordered consumer, one dispatcher, then a second joining and the first leaving
    while rows flow: each subject's marks arrive in order and none twice."""
    subjects, rounds = 40, 12

    async def slowish(received: Received) -> Reply:
        await asyncio.sleep(0.002)
        return 200, {}

    consumer = RecordingConsumer(slowish)
    async with serve(consumer.app) as base:
        config = dispatch_config(
            db_url, {"promotions": http_consumer(f"{base}/seen", ordered=True, concurrency=16)}
        )

        async def add_round(n: int) -> None:
            await add_marks(
                db,
                "promotions",
                "promotions",
                [(client(f"user-{s}"), f"item-{n:03d}") for s in range(subjects)],
            )

        async def delivered_at_least(count: int) -> bool:
            return (await outbox_status(db)).get("delivered", 0) >= count

        async with running(config, db_url, name="d1") as d1:
            for n in range(4):
                await add_round(n)
            await wait_until(lambda: delivered_at_least(subjects), 30, "d1 delivering")
            async with running(config, db_url, name="d2") as d2:
                # Rows keep coming while the buckets move.
                await add_round(4)

                async def split() -> bool:
                    assert d1.leases is not None and d2.leases is not None
                    mine, theirs = d1.leases.buckets("promotions"), d2.leases.buckets("promotions")
                    return len(mine) == 32 == len(theirs)

                await wait_until(split, 30, "the buckets split between d1 and d2", step=0.1)
                for n in range(5, 8):
                    await add_round(n)
                await wait_until(
                    lambda: delivered_at_least(subjects * 8), 30, "d1 and d2 delivering"
                )
            # d2 stopped and gave its buckets back: d1 takes them all again.
            for n in range(8, rounds):
                await add_round(n)

            async def all_delivered() -> bool:
                return (await outbox_status(db)) == {"delivered": subjects * rounds}

            await wait_until(all_delivered, 60, "every row delivered", step=0.1)
            assert d1.leases is not None
            assert len(d1.leases.buckets("promotions")) == 64

    assert consumer.duplicates == 0
    by = await db.execute("SELECT DISTINCT claimed_by FROM outbox ORDER BY 1")
    assert [r[0] for r in await by.fetchall()] == ["d1", "d2"]
    per_subject: dict[str, list[str]] = {}
    for webhook_id in consumer.accept_order:
        body = consumer.accepted[webhook_id]
        per_subject.setdefault(body["user_id"], []).append(body["id"])
    expected = [f"item-{n:03d}" for n in range(rounds)]
    assert len(per_subject) == subjects
    for user, items in per_subject.items():
        assert items == expected, user
