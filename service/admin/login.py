"""Signing in and out of /admin, with a growing delay and a lock after failed logins."""

from __future__ import annotations

import asyncio
import hmac
import math
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import audit
from service.admin import sessions
from service.admin.passwords import HASHER, needs_rehash, verify_password
from service.admin.sessions import Session
from service.admin.web import (
    ANONYMOUS,
    REFUSED,
    client_ip,
    current_session,
    pool_of,
    redirect,
    refuse,
    render,
    settings_of,
)
from service.config.admin import AdminSettings
from service.sql import q

WRONG = "Wrong username or password."
# Why the sign-in form is shown, by the `why` a redirect gives: fixed texts only, so a
# crafted link cannot put words on the page.
WHY = {
    "signed_out": "You have signed out.",
    "expired": "Your session has ended (it was idle too long, or reached its time limit): "
    "sign in again.",
}


def locked(until: datetime) -> str:
    """The answer while a name is locked: for how long, and until when (UTC), so nobody
    retries blindly; the same for every name, known or not."""
    minutes = max(1, math.ceil((until - datetime.now(UTC)).total_seconds() / 60))
    return (
        f"Too many failed sign-ins: this name is locked for the next {minutes} "
        f"minute{'s' if minutes != 1 else ''}, until {until.astimezone(UTC):%H:%M} UTC. "
        "Try again then, or have it unlocked with bin/admin unlock."
    )


def wrong(failures: int, settings: AdminSettings) -> str:
    """A wrong password's answer, with what the next failures bring: a lock, and for how
    long (the same for every name, known or not)."""
    left = max(settings.max_failures - failures, 1)
    minutes = max(1, math.ceil(settings.lockout.total_seconds() / 60))
    tries = f"{left} more failed sign-in" + ("s lock" if left != 1 else " locks")
    span = f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{WRONG} {tries} this name for {span}."


def _next(value: Any) -> str:
    # Only a path of this panel: an open redirect would make the login page a phishing aid.
    text = value if isinstance(value, str) else ""
    return text if text.startswith("/admin") and not text.startswith("//") else "/admin/"


def _form(request: Request, who: Session, status: int = 200, **context: Any) -> Response:
    response = render(
        request,
        None,
        "login.html",
        {"csrf": who.csrf_token, "next": context.pop("next", "/admin/"), **context},
        status=status,
    )
    sessions.set_cookie(response, settings_of(request), who)
    return response


async def _anonymous(request: Request) -> Session:
    who = await current_session(request)
    if who is not None and not who.logged_in:
        return who
    async with pool_of(request).connection() as conn:
        return await sessions.create(conn, settings_of(request))


async def login_form(request: Request) -> Response:
    who = await current_session(request)
    if who is not None and who.logged_in:
        return redirect(_next(request.query_params.get("next")))
    return _form(
        request,
        await _anonymous(request),
        next=_next(request.query_params.get("next")),
        notice=WHY.get(request.query_params.get("why") or ""),
    )


async def login(request: Request) -> Response:
    settings = settings_of(request)
    who = await current_session(request)
    async with request.form(max_files=0, max_fields=10) as form:
        username = str(form.get("username") or "").strip().lower()[:64]
        password = str(form.get("password") or "")[:1024]
        csrf = str(form.get("csrf") or "")
        target = _next(form.get("next"))
    if who is None or who.logged_in or not hmac.compare_digest(csrf, who.csrf_token):
        # No anonymous session, or not its token: a stale or forged form.
        async with pool_of(request).connection() as conn:
            await audit.record(
                conn,
                username or ANONYMOUS,
                REFUSED,
                "POST /admin/login",
                after={"outcome": REFUSED, "status": 403, "why": "missing or wrong CSRF token"},
                client_ip=client_ip(request),
            )
        return _form(request, await _anonymous(request), 403, error="The form expired; try again.")
    async with pool_of(request).connection() as conn:
        cur = await conn.execute(q("admin_login_locked"), {"username": username})
        lock = await cur.fetchone()
        if lock is not None:
            await audit.record(
                conn, username or "?", "login_refused", username, client_ip=client_ip(request)
            )
            error = locked(lock[1])
            return _form(request, who, 429, error=error, username=username, next=target)
        cur_user = conn.cursor(row_factory=dict_row)
        await cur_user.execute(q("admin_find_user"), {"username": username})
        account = await cur_user.fetchone()
    usable = account is not None and not account["disabled"]
    good = await verify_password(account["password_hash"] if usable and account else None, password)
    async with pool_of(request).connection() as conn, conn.transaction():
        if not good or account is None:
            cur = await conn.execute(
                q("admin_login_failed"),
                {
                    "username": username,
                    "max_failures": settings.max_failures,
                    "lockout": settings.lockout,
                },
            )
            row = await cur.fetchone()
            failures, locked_until = row if row else (1, None)
            await audit.record(
                conn,
                username or "?",
                "login_failed",
                username,
                after={"failures": failures, "locked": locked_until is not None},
                client_ip=client_ip(request),
            )
        else:
            await conn.execute(
                q("admin_login_succeeded"), {"username": username, "user_id": account["id"]}
            )
            if needs_rehash(account["password_hash"]):
                await conn.execute(
                    q("admin_set_password"),
                    {"username": username, "password_hash": HASHER.hash(password)},
                )
            await sessions.delete(conn, who.token)
            await sessions.prune(conn, settings)
            new = await sessions.create(conn, settings, account["id"])
            await audit.record(conn, username, "login", username, client_ip=client_ip(request))
    if not good or account is None:
        delay = settings.failure_delay.total_seconds() * 2 ** (failures - 1)
        await asyncio.sleep(min(delay, settings.max_delay.total_seconds()))
        message = locked(locked_until) if locked_until is not None else wrong(failures, settings)
        status = 429 if locked_until is not None else 401
        return _form(request, who, status, error=message, username=username, next=target)
    response = redirect(target)
    sessions.set_cookie(response, settings, new)
    return response


async def logout(request: Request) -> Response:
    settings = settings_of(request)
    who = await current_session(request)
    async with request.form(max_files=0, max_fields=10) as form:
        csrf = str(form.get("csrf") or "")
    if who is None or not who.logged_in:
        return redirect("/admin/login?why=expired")
    if not hmac.compare_digest(csrf, who.csrf_token):
        # A forged sign-out (another site's form) ends nothing.
        return await refuse(
            request,
            who,
            403,
            "The form has expired; reload the page.",
            "missing or wrong CSRF token",
        )
    async with pool_of(request).connection() as conn, conn.transaction():
        await sessions.delete(conn, who.token)
        await audit.record(
            conn, who.username or "?", "logout", who.username, client_ip=client_ip(request)
        )
    response = redirect("/admin/login?why=signed_out")
    sessions.clear_cookie(response, settings)
    return response


ROUTES = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
