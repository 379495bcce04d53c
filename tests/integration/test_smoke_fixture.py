from __future__ import annotations

from typing import Any

import psycopg


async def test_fresh_database_is_migrated(db: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
    cur = await db.execute("SELECT count(*) FROM outbox")
    assert await cur.fetchone() == (0,)
