"""Users in the admin: one user's contacts, preferences, topics, inbox, notifications and
seen marks, looked up by id. Read-only.

Lookup is by id; a text that is no user's id lists the users whose id or email starts
with it (users_id_prefix_idx, users_email_lower_idx), and no text lists the users changed
last. Seen marks are by the user's subject key and bounded by time (see
admin_user_seen_marks).
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
LISTED = 25
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
    state = state_of(request)
    if user_id:
        context |= await _lookup(state, user_id)
        if context["user"] is None:
            async with state.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(q("admin_users_search"), {"prefix": user_id, "limit": LISTED})
                context["listed"] = await cur.fetchall()
            if not context["listed"]:
                status = 404
                context["error"] = f"No user with id {user_id!r}, nor one starting so."
        else:
            context["title"] = f"User {user_id}"
    else:
        async with state.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("admin_users_recent"), {"limit": LISTED})
            context["listed"] = await cur.fetchall()
            context["recent"] = True
    return render(request, who, "users.html", context, status=status)


ROUTES = [Route("/users", users_page, methods=["GET"])]
