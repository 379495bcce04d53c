"""An event's intake and its status, one code path for POST /v1/events and GET
/v1/events/{id} (service/notify/events.py) and the admin's mailings (service/admin/mailings.py).

Intake is notify_event() in SQL (the `accept_event` query), which producers sharing the
database call too; its refusals (SQLSTATE 22023) become IntakeRefused with the API's error
code. Status is the `event_status` query, decoded into the Structs of service/wire.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import tuple_row

from service.sql import q
from service.wire import ChannelCounts, EventAccepted, EventStatus, RecipientCounts

# notify_event()'s refusals, by the start of their message; any other is about recipients.
SQL_REFUSALS = {"unknown event type": "unknown_event_type", "event data lacks": "missing_data"}


class IntakeRefused(Exception):
    """notify_event() refused the event (the database's catalog disagrees with what was
    checked before): nothing was written. `code` is the API's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def accept_event(
    conn: psycopg.AsyncConnection[Any],
    *,
    producer: str,
    idempotency_key: str,
    type_name: str,
    recipients: str,
    data: str,
    send_at: datetime | None,
    chunk: int,
) -> EventAccepted:
    """Store the event and start its fan-out (or, for a repeat of the producer's key, the
    first event's id and status with `created` false). `recipients` and `data` are JSON.
    Runs in the caller's transaction, if any."""
    params = {
        "producer": producer,
        "idempotency_key": idempotency_key,
        "type": type_name,
        "recipients": recipients,
        "data": data,
        "send_at": send_at,
        "chunk": chunk,
    }
    try:
        cur = await conn.cursor(row_factory=tuple_row).execute(q("accept_event"), params)
        row = await cur.fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        message = exc.diag.message_primary or str(exc)
        code = next(
            (c for start, c in SQL_REFUSALS.items() if message.startswith(start)),
            "invalid_recipients",
        )
        raise IntakeRefused(code, message) from None
    assert row is not None
    return EventAccepted(str(row[0]), row[1], bool(row[2]))


async def event_status(
    conn: psycopg.AsyncConnection[Any],
    event_id: uuid.UUID | str,
    producer: str | None,
    seen_tag: str,
) -> EventStatus | None:
    """The event with its deliveries counted per channel and state; None unless it exists
    and is this producer's (producer None: anyone's)."""
    params = {"event_id": event_id, "producer": producer, "seen_tag": seen_tag}
    cur = await conn.cursor(row_factory=tuple_row).execute(q("event_status"), params)
    row = await cur.fetchone()
    if row is None:
        return None
    id_, type_, status, send_at, created_at, materialized_at, notified, no_recipient, channels = row
    return EventStatus(
        id=str(id_),
        type=type_,
        status=status,
        send_at=send_at,
        created_at=created_at,
        materialized_at=materialized_at,
        recipients=RecipientCounts(notified, no_recipient),
        channels=msgspec.convert(channels, dict[str, ChannelCounts]),
    )
