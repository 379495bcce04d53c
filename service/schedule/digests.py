"""Digests: the items of digest-mode event types (e.g. likes on a comment), gathered per
recipient and key by the fan-out, are sent when due as one notification each.

Everything happens in SQL (sql/digests/): the open_digests view says
what is gathering and when each digest is due; flush_digests() sends the due ones in one
set-based statement and one transaction, safe beside a concurrent flush and the intake.
flush_due() is what a scheduler calls (the Procrastinate periodic task or pg_cron; see
service/schedule/), as often as the shortest window needs, e.g. every minute.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg

from service.sql import q


class OpenDigest(msgspec.Struct, frozen=True, kw_only=True):
    """A digest still gathering: one recipient's items of one type under one key."""

    user_id: str
    type: str
    digest_key: str
    items: int
    first_at: datetime
    last_at: datetime
    # None: its type is no longer in digest mode, so it is not sent.
    due_at: datetime | None


async def flush_due(conn: psycopg.AsyncConnection[Any]) -> int:
    """Send every due digest; the number sent. Its own transaction (a savepoint if the
    caller has one open): the notifications, outbox rows and stamped items commit
    together. 0 when nothing was due or another flush was running (it takes them)."""
    async with conn.transaction():
        cur = await conn.execute(q("flush_digests"))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def open_digests(
    conn: psycopg.AsyncConnection[Any], user_id: str | None = None
) -> list[OpenDigest]:
    """The digests gathering (one recipient's, or everyone's), soonest due first."""
    cur = await conn.execute(q("open_digests"), {"user_id": user_id})
    fields = ("user_id", "type", "digest_key", "items", "first_at", "last_at", "due_at")
    return [
        msgspec.convert(dict(zip(fields, row, strict=True)), OpenDigest)
        for row in await cur.fetchall()
    ]
