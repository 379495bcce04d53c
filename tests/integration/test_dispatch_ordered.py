"""Ordered consumers: one subject's rows in order, subjects in parallel, through failures."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
import pytest

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
SUBJECTS = 50
PER_SUBJECT = 20


@pytest.mark.citus
async def test_ordered_consumer_delivers_each_subjects_marks_in_order(
    db: Conn, db_url: str
) -> None:
    rng = random.Random(7)

    async def flaky(received: Received) -> Reply:
        # Transient failures at random, and random latency so that a later row would
        # overtake an earlier one if the dispatcher let both out at once.
        await asyncio.sleep(rng.uniform(0, 0.004))
        return (503, {}) if rng.random() < 0.2 else (200, {})

    consumer = RecordingConsumer(flaky)
    async with serve(consumer.app) as base:
        ordered = http_consumer(
            f"{base}/seen",
            ordered=True,
            concurrency=32,
            backoff={"initial": 0.01, "factor": 2.0, "cap": 0.05},
        )
        config = dispatch_config(db_url, {"promotions": ordered})
        # Rounds of one mark per subject, so each subject's ids interleave with the others'.
        for n in range(PER_SUBJECT):
            await add_marks(
                db,
                "promotions",
                "promotions",
                [(client(f"user-{s}"), f"item-{n:03d}") for s in range(SUBJECTS)],
            )
        # Two dispatchers compete for the same rows (the SQL, not one process, keeps order).
        async with running(config, db_url, name="d1"), running(config, db_url, name="d2"):

            async def all_delivered() -> bool:
                return (await outbox_status(db)) == {"delivered": SUBJECTS * PER_SUBJECT}

            await wait_until(all_delivered, 90, "all rows delivered", step=0.2)

    failures = len(consumer.requests) - len(consumer.accepted) - consumer.duplicates
    assert failures > 50, "the consumer should have failed a fair share of requests"
    assert consumer.duplicates == 0
    assert all(r.verified for r in consumer.requests)
    per_subject: dict[str, list[str]] = {}
    for webhook_id in consumer.accept_order:
        body = consumer.accepted[webhook_id]
        per_subject.setdefault(body["user_id"], []).append(body["id"])
    assert len(per_subject) == SUBJECTS
    expected = [f"item-{n:03d}" for n in range(PER_SUBJECT)]
    for user, items in per_subject.items():
        assert items == expected, user
    # Stronger than the accepted order: a mark is never even sent before every earlier
    # mark of its subject was accepted.
    done: dict[str, int] = {}
    for r, status in consumer.answered:
        user, n = r.body["user_id"], int(r.body["id"].removeprefix("item-"))
        assert n == done.get(user, 0), (user, n, done.get(user, 0))
        if status == 200:
            done[user] = n + 1
