"""The fan-out of an event to its recipients, as the dispatcher's task runs it.

The work is SQL (sql/notify/functions/): the audience is cut into chunks of user ids, each
claimed in a short transaction (notify_claim_chunk) and materialized by one set-based
statement in a transaction of its own (notify_materialize_chunk). Several workers, each on
its own connection, materialize chunks side by side, so a large audience uses every core
PostgreSQL has; a chunk left by a worker that died is claimed again, and a chunk done
twice adds nothing (UNIQUE (event_id, user_id)).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from service.database import CONNECTION_OPTIONS
from service.sql import q

# Spelled by notify_event() in SQL too (producers call it directly); tests/unit/test_job_names.py
# holds the two together.
MATERIALIZE_QUEUE = "notify"
MATERIALIZE_TASK = "notify.materialize"
# Two workers: the fan-out is CPU-bound in PostgreSQL, and this is a 2-core design target.
FANOUT_WORKERS = 2


async def materialize_event(conn: psycopg.AsyncConnection[Any], event_id: str, chunk: int) -> int:
    """Materialize every remaining chunk of one event on one connection (autocommit: each
    step commits on its own); the recipients covered."""
    total = 0
    while True:
        cur = await conn.execute(q("materialize_step"), {"event_id": event_id, "chunk": chunk})
        row = await cur.fetchone()
        covered = int(row[0]) if row else 0
        total += covered
        if covered < chunk:
            return total


async def _worker(url: str, event_id: str, chunk: int) -> int:
    total = 0
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, options=CONNECTION_OPTIONS
    ) as conn:
        while True:
            cur = await conn.execute(q("claim_chunk"), {"event_id": event_id, "chunk": chunk})
            claimed = await cur.fetchone()
            if claimed is None:
                return total
            lo, hi = claimed
            cur = await conn.execute(
                q("materialize_range"), {"event_id": event_id, "lo": lo, "hi": hi}
            )
            row = await cur.fetchone()
            total += int(row[0]) if row else 0


async def materialize_parallel(
    url: str, event_id: str, chunk: int, workers: int = FANOUT_WORKERS
) -> tuple[int, bool]:
    """Materialize one event with `workers` connections side by side; the recipients
    covered here and whether the event is done (False: another run still holds a chunk)."""
    covered = await asyncio.gather(*(_worker(url, event_id, chunk) for _ in range(workers)))
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, options=CONNECTION_OPTIONS
    ) as conn:
        cur = await conn.execute(q("finish_event"), {"event_id": event_id})
        row = await cur.fetchone()
    return sum(covered), bool(row and row[0])
