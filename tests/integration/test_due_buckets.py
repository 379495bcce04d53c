"""due_buckets: which of a consumer's buckets hold rows due now, the read a dispatcher makes
on a Citus cluster after an empty claim (dispatcher/loop.py) instead of claiming every
shard in turn."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from service.sql import q

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

pytestmark = pytest.mark.citus


async def add(db: Conn, consumer: str, bucket: int, *, due_in: str, status: str) -> None:
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, next_attempt_at,"
        " bucket) VALUES ('seen', %s, 'k', '{}', %s, now() + %s::interval, %s)",
        [consumer, status, due_in, bucket],
    )


async def test_only_buckets_asked_for_with_pending_rows_due_now(db: Conn) -> None:
    await add(db, "promotions", 3, due_in="-1 second", status="pending")
    await add(db, "promotions", 3, due_in="-2 seconds", status="pending")
    await add(db, "promotions", 7, due_in="-1 second", status="pending")
    await add(db, "promotions", 9, due_in="1 hour", status="pending")  # not due yet
    await add(db, "promotions", 11, due_in="-1 second", status="delivered")
    await add(db, "goals", 13, due_in="-1 second", status="pending")  # another consumer
    await add(db, "promotions", 20, due_in="-1 second", status="pending")  # not asked for

    cur = await db.execute(
        q("due_buckets"), {"consumer": "promotions", "buckets": [3, 7, 9, 11, 13]}
    )
    assert sorted(row[0] for row in await cur.fetchall()) == [3, 7]
