"""The header's lookup box: whatever was pasted (a user id or email, an event or webhook
id, a notification or delivery id) goes to its page; several or no matches get a short
page of what was found, with users whose id or email starts with the text."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import page, pool_of, redirect, render
from service.sql import q

MAX_TEXT = 320  # the longest email address; a longer text names nothing
USERS_SHOWN = 20
LABELS = {
    "user": "User",
    "event": "Event",
    "notification": "Notification",
    "delivery": "Delivery",
    "webhook": "Delivery with this webhook id",
}


def href(kind: str, key: str) -> str:
    """The page of one thing the lookup found."""
    if kind == "user":
        return f"/admin/users?id={quote(key, safe='')}"
    if kind == "event":
        return f"/admin/events/{key}"
    if kind == "notification":
        return f"/admin/deliveries?notification={key}"
    return f"/admin/deliveries/{key}"


def _as_uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


async def find(conn: Any, text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What `text` names exactly, and users whose id or email starts with it."""
    params = {
        "text": text,
        "uuid": _as_uuid(text),
        "num": int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None,
    }
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("admin_lookup"), params)
    exact = [row | {"href": href(row["kind"], row["id"])} for row in await cur.fetchall()]
    await cur.execute(q("admin_users_search"), {"prefix": text, "limit": USERS_SHOWN})
    seen = {row["id"] for row in exact if row["kind"] == "user"}
    users = [row for row in await cur.fetchall() if row["id"] not in seen]
    return exact, users


@page("manager")
async def lookup(request: Request, who: Session) -> Response:
    text = (request.query_params.get("q") or "").strip()
    if not text:
        return redirect("/admin/users")
    exact: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    if len(text) <= MAX_TEXT:
        async with pool_of(request).connection() as conn:
            exact, users = await find(conn, text)
    if len(exact) == 1 and not users:
        return redirect(exact[0]["href"])
    context = {
        "title": "Lookup",
        "text": text,
        "exact": exact,
        "users": users,
        "labels": LABELS,
    }
    return render(request, who, "lookup.html", context, status=200 if exact or users else 404)


ROUTES = [Route("/lookup", lookup, methods=["GET"])]
