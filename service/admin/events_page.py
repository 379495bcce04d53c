"""An event's page: its state and its deliveries counted per channel, exactly as
GET /v1/events/{id} counts them (event_status(), the same query), each count a link to
those deliveries."""

from __future__ import annotations

import uuid

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import page, pool_of, problem, render
from service.event_intake import event_status
from service.state import state_of

# A channel's counts as the page shows them: label, ChannelCounts field, deliveries'
# status filter (None: not one status of their own).
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("Queued", "queued", "pending"),
    ("Held", "held", "pending"),
    ("Sent", "sent", "delivered"),
    ("Failed", "failed", "failed"),
    ("Dead", "dead", "dead"),
    ("Seen", "seen", None),
)


@page("manager")
async def event_page(request: Request, who: Session) -> Response:
    raw = request.path_params["event_id"]
    try:
        event_id = uuid.UUID(raw)
    except ValueError:
        return problem(request, who, 404, f"{raw!r} is not an event id.")
    seen_tag = state_of(request).config.notify.seen_tag
    async with pool_of(request).connection() as conn:
        status = await event_status(conn, event_id, None, seen_tag)
    if status is None:
        return problem(request, who, 404, f"There is no event {event_id}.")
    channels = {
        name: msgspec.to_builtins(counts) for name, counts in sorted(status.channels.items())
    }
    context = {
        "title": f"Event {status.type}",
        "event": status,
        "channels": channels,
        "columns": COLUMNS,
    }
    return render(request, who, "event.html", context)


ROUTES = [Route("/events/{event_id}", event_page, methods=["GET"])]
