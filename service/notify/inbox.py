"""The in-app inbox: `GET /v1/inbox` for the signed-in client.

It lists the user's notifications whose inbox delivery is done (the inbox is a channel
like the others, so send_at, quiet hours and ttl apply to it), newest first, rendered
from their type's `[inbox]` templates in the user's locale when read. `?limit=` (1-100,
default 20) and `?cursor=` (the `next_cursor` of the previous page, opaque) page through
them; `unseen` counts the unseen ones in all. A notification is seen once the app sends
`POST /v1/seen {"tag": <notify.seen_tag>, "id": <item id>}`.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.errors import api_error
from service.http import json_response
from service.notify.notify_wire import InboxItem, InboxPage
from service.notify.request_parts import client_user
from service.sql import q
from service.state import EventTemplates, RenderError, State, state_of

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise api_error("invalid_query", f"limit must be 1 to {MAX_LIMIT}.")
    return int(raw)


def _cursor(raw: str | None) -> int | None:
    # The cursor is the id of the last item of the previous page; callers treat it as opaque.
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise api_error("invalid_query", "cursor must be a next_cursor from an earlier page.")
    return int(raw)


def _render(
    templates: EventTemplates | None, locale: str | None, context: dict[str, Any]
) -> dict[str, Any]:
    """The inbox parts; RenderError when they cannot be rendered (the type or its inbox
    template left the configuration, or a template needs data the event lacks)."""
    if templates is None:
        raise RenderError("no templates for this type any more")
    try:
        return templates.render("inbox", locale, context)
    except KeyError:
        raise RenderError("no inbox template") from None


def page_params(
    state: State, user_id: str, *, before: int | None, limit: int, ids: list[int] | None
) -> dict[str, Any]:
    """inbox_page's parameters: the user's page older than `before`, or items `ids`."""
    return {
        "user_id": user_id,
        "subject_key": f"client:{user_id}",
        "seen_tag": state.config.notify.seen_tag,
        "channels": [n for n, c in state.config.channels.items() if c.kind == "inbox"],
        "before": before,
        "ids": ids,
        "limit": limit,
    }


def page_items(state: State, user_id: str, rows: list[Any]) -> tuple[int, list[InboxItem]]:
    """inbox_page's rows as the unseen count and the items, rendered for the user."""
    unseen = int(rows[0][0]) if rows else 0
    items: list[InboxItem] = []
    for _, id_, event_id, type_, category, created_at, data, locale, seen in rows:
        if id_ is None:
            continue
        context = dict(data) if isinstance(data, dict) else {}
        context |= {
            "recipient": {"id": user_id, "locale": locale},
            "notification_id": id_,
            "event_id": str(event_id),
        }
        try:
            parts = _render(state.templates.get(type_), locale, context)
        except RenderError as exc:
            # Still listed, so the user can see and dismiss it.
            log.warning("inbox: notification %s not rendered: %s", id_, exc)
            parts = {"title": type_, "body": ""}
        items.append(
            InboxItem(
                id=str(id_),
                type=type_,
                category=category,
                title=str(parts.get("title", "")),
                body=str(parts.get("body", "")),
                link=str(parts["link"]) if parts.get("link") else None,
                created_at=created_at,
                seen=bool(seen),
            )
        )
    return unseen, items


async def get_inbox(request: Request) -> Response:
    user_id = client_user(request)
    state = state_of(request)
    # As bodies forbid unknown fields: a misspelt parameter is an error, not ignored.
    unknown = sorted(set(request.query_params) - {"limit", "cursor"})
    if unknown:
        raise api_error("invalid_query", f"Unknown query parameter {unknown[0]!r}.")
    limit = _limit(request.query_params.get("limit"))
    before = _cursor(request.query_params.get("cursor"))
    # One more than asked tells whether another page follows.
    params = page_params(state, user_id, before=before, limit=limit + 1, ids=None)
    async with state.pool.connection() as conn:
        cur = await conn.execute(q("inbox_page"), params)
        rows = await cur.fetchall()
    unseen, found = page_items(state, user_id, rows)
    items = found[:limit]
    next_cursor = items[-1].id if len(found) > limit else None
    return json_response(
        InboxPage(
            items=items,
            unseen=unseen,
            next_cursor=next_cursor,
            seen_tag=state.config.notify.seen_tag,
        )
    )


ROUTES: list[BaseRoute] = [Route("/v1/inbox", get_inbox, methods=["GET"])]
