"""The fan-out of an event to its recipients, as the dispatcher's task runs it.

The work is SQL (notify_materialize() in sql/schema.sql): one set-based statement per
chunk of recipients. This module only walks the chunks, each in its own transaction, so
a million-user audience never holds one long transaction and a crash resumes at the
event's cursor.
"""

from __future__ import annotations

from typing import Any

import psycopg

from service.sql import q

# Written by notify_event() in SQL: change both together.
MATERIALIZE_QUEUE = "notify"
MATERIALIZE_TASK = "notify.materialize"


async def materialize_event(conn: psycopg.AsyncConnection[Any], event_id: str, chunk: int) -> int:
    """Materialize every remaining chunk of one event; the recipients covered.

    `conn` must be in autocommit mode: each chunk commits on its own.
    """
    total = 0
    while True:
        cur = await conn.execute(q("materialize_chunk"), {"event_id": event_id, "chunk": chunk})
        row = await cur.fetchone()
        covered = int(row[0]) if row else 0
        total += covered
        if covered < chunk:
            return total
