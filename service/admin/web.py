"""What every admin page shares: who is asking, role checks, CSRF, rendering, audit.

A page module defines handlers with `@page(role)` (GET: the signed-in admin is passed in)
or `@action(role)` (POST: the CSRF token checked and the form parsed first) and lists
them as Starlette routes; service/admin/mount.py mounts them all under /admin.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from service import audit
from service.admin import sessions
from service.admin.sessions import Session
from service.config.admin import AdminSettings
from service.state import state_of

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
ROLES = ("manager", "operator")
# Each role's pages (an operator sees everything a manager does).
NAV: tuple[tuple[str, str, str], ...] = (
    ("/admin/", "Dashboard", "manager"),
    ("/admin/mailings", "Mailings", "manager"),
    ("/admin/schedules", "Schedules", "manager"),
    ("/admin/deliveries", "Deliveries", "manager"),
    ("/admin/users", "Users", "manager"),
    ("/admin/consumers", "Consumers", "manager"),
    ("/admin/audit", "Audit log", "manager"),
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _utc(value: datetime | None) -> str:
    """A moment as text, in UTC (for attributes and confirmations)."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: datetime | None, relative: str = "") -> Markup:
    """A moment as a <time> element: UTC as served, which admin.js turns into the viewer's
    own zone (or, with `relative`, "3 min ago") and keeps UTC on hover."""
    if value is None:
        return Markup("—")
    utc = value.astimezone(UTC)
    shown = _utc(utc)
    extra = " data-relative" if relative else ""
    # Safe to mark: digits and fixed text only.
    return Markup(  # noqa: S704
        f'<time datetime="{utc.strftime("%Y-%m-%dT%H:%M:%SZ")}" title="{shown}"{extra}>'
        f"{shown}</time>"
    )


def _ago(value: datetime | None) -> str:
    if value is None:
        return "—"
    seconds = (datetime.now(UTC) - value).total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


ENV = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = _when
ENV.filters["utc"] = _utc
ENV.filters["ago"] = _ago


def settings_of(request: Request) -> AdminSettings:
    return state_of(request).config.admin


def pool_of(request: Request) -> AsyncConnectionPool:
    return state_of(request).pool


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def allowed(who: Session, role: str) -> bool:
    """Whether the admin's role covers `role` (operators can do what managers can)."""
    return who.role == "operator" or who.role == role


def render(
    request: Request,
    who: Session | None,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> HTMLResponse:
    nav = [(href, label) for href, label, role in NAV if who and who.role and allowed(who, role)]
    body = ENV.get_template(template).render(
        {
            "who": who,
            "csrf": who.csrf_token if who else "",
            "nav": nav,
            "path": request.url.path,
            "is_operator": bool(who and who.role == "operator"),
            **(context or {}),
        }
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def problem(request: Request, who: Session | None, status: int, message: str) -> HTMLResponse:
    return render(
        request, who, "problem.html", {"status": status, "message": message}, status=status
    )


REFUSED = "refused"
ANONYMOUS = "(anonymous)"


async def refuse(
    request: Request, who: Session | None, status: int, message: str, why: str | None = None
) -> HTMLResponse:
    """Answer a refused POST with the problem page, after its audit row: who asked (or
    `(anonymous)`), action `refused`, the method and path as the target, and why."""
    actor = who.username if who is not None and who.username else ANONYMOUS
    async with pool_of(request).connection() as conn:
        await audit.record(
            conn,
            actor,
            REFUSED,
            f"{request.method} {request.url.path}",
            after={
                "outcome": REFUSED,
                "status": status,
                "why": why or message,
                "role": who.role if who is not None else None,
            },
            client_ip=client_ip(request),
        )
    return problem(request, who if who is not None and who.logged_in else None, status, message)


async def current_session(request: Request) -> Session | None:
    settings = settings_of(request)
    token = sessions.token_of(request, settings)
    if not token:
        return None
    async with pool_of(request).connection() as conn:
        return await sessions.find(conn, settings, token)


def _csrf_ok(request: Request, who: Session, form: FormData) -> bool:
    # A browser says where a request came from; another site's form is refused outright.
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    sent = form.get("csrf") or request.headers.get("x-csrf-token") or ""
    return isinstance(sent, str) and hmac.compare_digest(sent, who.csrf_token)


PageHandler = Callable[[Request, Session], Awaitable[Response]]
ActionHandler = Callable[[Request, Session, FormData], Awaitable[Response]]


def page(role: str) -> Callable[[PageHandler], Callable[[Request], Awaitable[Response]]]:
    """A GET page for admins whose role covers `role`; others go to the login form
    (no session) or get 403."""

    def wrap(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def endpoint(request: Request) -> Response:
            who = await current_session(request)
            if who is None or not who.logged_in:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                # A cookie naming no session: it ended (timed out, or its account disabled).
                ended = who is None and sessions.token_of(request, settings_of(request))
                why = "&why=expired" if ended else ""
                return redirect(f"/admin/login?next={quote(target, safe='')}{why}")
            if not allowed(who, role):
                return problem(request, who, 403, "This page is for operators.")
            return await handler(request, who)

        return endpoint

    return wrap


def action(role: str) -> Callable[[ActionHandler], Callable[[Request], Awaitable[Response]]]:
    """A POST for admins whose role covers `role`, with a valid CSRF token; anything
    else is a 403 that changes nothing."""

    def wrap(handler: ActionHandler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def endpoint(request: Request) -> Response:
            who = await current_session(request)
            if who is None or not who.logged_in:
                return await refuse(request, who, 403, "Sign in first.", "not signed in")
            settings = settings_of(request)
            async with request.form(
                max_files=1, max_fields=200, max_part_size=settings.max_upload_bytes
            ) as form:
                if request.headers.get("sec-fetch-site") == "cross-site":
                    return await refuse(
                        request, who, 403, "The form has expired; reload the page.", "cross-site"
                    )
                if not _csrf_ok(request, who, form):
                    return await refuse(
                        request,
                        who,
                        403,
                        "The form has expired; reload the page.",
                        "missing or wrong CSRF token",
                    )
                if not allowed(who, role):
                    return await refuse(
                        request, who, 403, "Only operators can do this.", f"needs the {role} role"
                    )
                return await handler(request, who, form)

        return endpoint

    return wrap


async def record(
    conn: AsyncConnection[Any],
    request: Request,
    who: Session,
    action_name: str,
    target: str | None = None,
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    """The audit row of an admin action, written in the action's own transaction."""
    await audit.record(
        conn,
        who.username or "?",
        action_name,
        target,
        before=before,
        after=after,
        client_ip=client_ip(request),
    )
