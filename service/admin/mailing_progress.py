"""A sent mailing's progress: its event's deliveries as GET /v1/events/{id} counts them,
and before they exist the fan-out's own count (event_chunks), so the share done never runs
ahead of what is queued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from psycopg.rows import dict_row
from starlette.requests import Request

from service.admin.web import pool_of
from service.event_intake import event_status
from service.sql import q
from service.state import state_of

# The producer of mailings' events (notify_event()).
PRODUCER = "admin"
_encode = msgspec.json.Encoder().encode


def percent(
    event_status: str | None, deliveries: int, finished: int, fanout: int | None = None
) -> int | None:
    """How much of a sent mailing is done: deliveries no longer pending, out of those
    queued; 100 only once the fan-out is over too. While the fan-out runs it is at most
    the fan-out's own share (`fanout`: chunks done of chunks, 0 when unknown), so a
    mailing with nothing queued yet never reads as nearly done. None before it is sent."""
    if event_status is None:
        return None
    if event_status == "scheduled":
        return 0
    if event_status == "materializing":
        cap = fanout if fanout is not None else (99 if deliveries else 0)
        share = finished * 100 // deliveries if deliveries else cap
        return min(share, cap, 99)
    return 100 if deliveries == 0 else finished * 100 // deliveries


async def progress_of(request: Request, row: Mapping[str, Any]) -> dict[str, Any]:
    """The mailing's event as GET /v1/events/{id} reads it (event_status()), its channels'
    counts shown as queued / sent / failed / suppressed / seen, and how much is done."""
    if row["event_id"] is None:
        return {"sent": False}
    seen_tag = state_of(request).config.notify.seen_tag
    async with pool_of(request).connection() as conn:
        event = await event_status(conn, row["event_id"], PRODUCER, seen_tag)
    if event is None:
        return {"sent": False}
    fanout = await _fanout(request, row["event_id"]) if event.status == "materializing" else None
    channels = []
    totals = {"queued": 0, "sent": 0, "failed": 0, "suppressed": 0, "seen": 0}
    for name, counts in sorted(event.channels.items()):
        reasons = {k: v for k, v in msgspec.structs.asdict(counts.suppressed).items() if v}
        numbers = {
            "queued": counts.queued + counts.held,
            "sent": counts.sent,
            # Refused for good, or out of attempts: either way it did not arrive.
            "failed": counts.failed + counts.dead,
            "suppressed": sum(reasons.values()),
            "seen": counts.seen,
        }
        channels.append({"channel": name, "reasons": reasons, **numbers})
        for key, number in numbers.items():
            totals[key] += number
    # Every delivery decided so far: suppressed ones (at the fan-out or later) are done
    # with, as are the sent and failed; what is queued or held is still to go.
    decided = totals["queued"] + totals["sent"] + totals["failed"] + totals["suppressed"]
    return {
        "sent": True,
        "event": event,
        "channels": channels,
        "totals": totals,
        "percent": percent(
            event.status, decided, decided - totals["queued"], fanout["share"] if fanout else None
        ),
        "pending": totals["queued"],
        "decided": decided,
        "fanout": fanout,
    }


def live_state(row: Mapping[str, Any], progress: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether the progress still changes (so the page refreshes it), and whether there is
    anything left to cancel: nothing once every delivery has gone out."""
    live = bool(progress.get("sent") and row["status"] == "sent" and progress["percent"] != 100)
    cancellable = row["status"] == "draft" or bool(
        row["status"] == "sent"
        and progress.get("sent")
        and (progress["event"].status != "done" or progress["pending"] > 0)
    )
    return live, cancellable


async def _fanout(request: Request, event_id: Any) -> dict[str, int] | None:
    """The fan-out's own progress: chunks materialized of the chunks there will be (those
    claimed, and what the audience left after the cursor will make), users covered."""
    chunk = state_of(request).config.notify.chunk_size
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_mailing_fanout"), {"event_id": event_id})
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            q("admin_audience_left"),
            {"recipients": _encode(row["recipients"]).decode(), "after": row["cursor"] or ""},
        )
        left = await cur.fetchone()
    unclaimed = int(left["users"]) if left else 0
    chunks = int(row["chunks"]) + -(-unclaimed // chunk)
    done = int(row["chunks_done"])
    return {
        "chunks": max(chunks, 1),
        "done": done,
        "covered": int(row["covered"]),
        "share": done * 100 // max(chunks, 1),
    }
