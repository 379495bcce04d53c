"""Server-side admin sessions in PostgreSQL, and the cookie that names one.

The cookie holds 256 random bits; the table holds only their SHA-256, so a copy of the
table opens no session. Logging in always makes a new session (the anonymous one that
carried the login form's CSRF token is deleted), so a token planted before login is
useless after it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from service.config.admin import AdminSettings
from service.sql import q

# __Host-: the browser sends it only to this host, over a secure origin, for every path.
SECURE_COOKIE = "__Host-mn_admin"
PLAIN_COOKIE = "mn_admin"
# last_seen_at is written at most this often per session.
TOUCH_EVERY = timedelta(minutes=1)


class Session(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    csrf_token: str
    user_id: int | None
    username: str | None
    role: str | None

    @property
    def logged_in(self) -> bool:
        return self.user_id is not None


def cookie_name(settings: AdminSettings) -> str:
    return SECURE_COOKIE if settings.secure_cookies else PLAIN_COOKIE


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create(
    conn: AsyncConnection[Any], settings: AdminSettings, user_id: int | None = None
) -> Session:
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    # An anonymous session only carries the login form: it lives as long as an idle one.
    ttl = settings.session_ttl if user_id is not None else settings.idle
    await conn.execute(
        q("admin_session_create"),
        {"token_hash": _hash(token), "user_id": user_id, "csrf_token": csrf, "ttl": ttl},
    )
    return Session(token=token, csrf_token=csrf, user_id=user_id, username=None, role=None)


async def find(conn: AsyncConnection[Any], settings: AdminSettings, token: str) -> Session | None:
    cur = await conn.execute(
        q("admin_session_find"), {"token_hash": _hash(token), "idle": settings.idle}
    )
    row = await cur.fetchone()
    if row is None:
        return None
    user_id, username, role, csrf, last_seen = row
    if datetime.now(UTC) - last_seen > TOUCH_EVERY:
        await conn.execute(q("admin_session_touch"), {"token_hash": _hash(token)})
    return Session(token=token, csrf_token=csrf, user_id=user_id, username=username, role=role)


async def delete(conn: AsyncConnection[Any], token: str) -> None:
    await conn.execute(q("admin_session_delete"), {"token_hash": _hash(token)})


async def prune(conn: AsyncConnection[Any], settings: AdminSettings) -> None:
    await conn.execute(q("admin_sessions_prune"), {"idle": settings.idle})


def token_of(request: Request, settings: AdminSettings) -> str | None:
    return request.cookies.get(cookie_name(settings))


def set_cookie(response: Response, settings: AdminSettings, session: Session) -> None:
    response.set_cookie(
        cookie_name(settings),
        session.token,
        max_age=int(settings.session_ttl.total_seconds()),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, settings: AdminSettings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
