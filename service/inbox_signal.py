"""The live inbox's change log and wake-up: the writers of inbox_changes (the
dispatcher's inbox deliveries, the seen write path) log a change and name its user on a
PostgreSQL NOTIFY channel, and each API process's one listener
(service/notify/inbox_hub.py) wakes that user's streams.

In the core because three packages meet here: the dispatcher and the seen capability
write, the notify capability listens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from psycopg import AsyncConnection

from service.sql import q

LISTEN_CHANNEL = "mark_notify_inbox"


async def record_inbox_changes(
    conn: AsyncConnection[Any], change: Literal["item", "seen"], items: Sequence[tuple[str, str]]
) -> None:
    """Log (user id, item id) pairs for the live inbox, in the caller's transaction."""
    params = {
        "user_ids": [user for user, _ in items],
        "item_ids": [item for _, item in items],
        "change": change,
        "listen_channel": LISTEN_CHANNEL,
    }
    await conn.execute(q("record_inbox_changes"), params)
