"""Users in the admin: one user's contacts, preferences, topics, inbox, notifications and
seen marks, looked up by id. Read-only.

Lookup is by id only: users has no index on email or phone, and a scan of every user per
lookup is not something a page should do. Seen marks are by the user's subject key and
bounded by time (see admin_user_seen_marks).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import page, render
from service.sql import q
from service.state import RenderError, State, state_of

log = logging.getLogger(__name__)

NOTIFICATIONS = 25
INBOX = 20
MARKS = 50
MARKS_SINCE = timedelta(days=7)
# Enough of a push token to match it with a provider's log, not enough to push with it.
TOKEN_SHOWN = 12


def _token(token: str) -> str:
    return token if len(token) <= TOKEN_SHOWN else token[:TOKEN_SHOWN] + "…"


def _inbox_title(state: State, type_: str, locale: str | None, context: dict[str, Any]) -> str:
    templates = state.templates.get(type_)
    if templates is None:
        return type_
    try:
        return str(templates.render("inbox", locale, context).get("title", type_))
    except (RenderError, KeyError) as exc:
        # Listed anyway, by type, as the inbox API does.
        log.warning("admin users: inbox item of type %s not rendered: %s", type_, exc)
        return type_


async def _lookup(state: State, user_id: str) -> dict[str, Any]:
    config = state.config
    subject_key = f"client:{user_id}"
    async with state.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("get_user"), {"user_id": user_id})
        user = await cur.fetchone()
        await cur.execute(q("get_preferences"), config.preference_params() | {"user_id": user_id})
        prefs = await cur.fetchone()
        await cur.execute(
            q("admin_user_notifications"),
            {
                "user_id": user_id,
                "subject_key": subject_key,
                "seen_tag": config.notify.seen_tag,
                "limit": NOTIFICATIONS,
            },
        )
        notifications = await cur.fetchall()
        await cur.execute(
            q("inbox_page"),
            {
                "user_id": user_id,
                "subject_key": subject_key,
                "seen_tag": config.notify.seen_tag,
                "channels": [n for n, c in config.channels.items() if c.kind == "inbox"],
                "before": None,
                "ids": None,
                "limit": INBOX,
            },
        )
        inbox_rows = await cur.fetchall()
        await cur.execute(
            q("admin_user_seen_marks"),
            {"subject_key": subject_key, "since": MARKS_SINCE, "limit": MARKS},
        )
        marks = await cur.fetchall()

    # The effective preferences, as GET /v1/users/{id}/preferences answers them.
    preferences = prefs["preferences"] if user and prefs else None
    inbox = []
    for row in inbox_rows:
        if row["id"] is None:
            continue
        context = dict(row["data"]) if isinstance(row["data"], dict) else {}
        context |= {
            "recipient": {"id": user_id, "locale": row["locale"]},
            "notification_id": row["id"],
            "event_id": str(row["event_id"]),
        }
        inbox.append(row | {"title": _inbox_title(state, row["type"], row["locale"], context)})
    return {
        "user": user,
        "devices": [
            {"platform": d["platform"], "token": _token(str(d["token"]))}
            for d in (user["devices"] if user else [])
        ],
        "preferences": preferences,
        "channels": list(config.channels),
        "notifications": notifications,
        "inbox": inbox,
        "unseen": int(inbox_rows[0]["unseen"]) if inbox_rows else 0,
        "marks": marks,
        "marks_days": MARKS_SINCE.days,
    }


@page("manager")
async def users_page(request: Request, who: Session) -> Response:
    user_id = (request.query_params.get("id") or "").strip()
    context: dict[str, Any] = {"title": "Users", "user_id": user_id, "looked_up": bool(user_id)}
    status = 200
    if user_id:
        context |= await _lookup(state_of(request), user_id)
        if context["user"] is None:
            status = 404
            context["error"] = f"No user with id {user_id!r}."
        else:
            context["title"] = f"User {user_id}"
    return render(request, who, "users.html", context, status=status)


ROUTES = [Route("/users", users_page, methods=["GET"])]
