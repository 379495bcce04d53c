"""Every route of the admin panel, mounted under /admin by service/app.py."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from service.admin.audit_page import ROUTES as AUDIT_ROUTES
from service.admin.consumers import ROUTES as CONSUMER_ROUTES
from service.admin.dashboard import ROUTES as DASHBOARD_ROUTES
from service.admin.deliveries import ROUTES as DELIVERY_ROUTES
from service.admin.events_page import ROUTES as EVENT_ROUTES
from service.admin.login import ROUTES as LOGIN_ROUTES
from service.admin.lookup import ROUTES as LOOKUP_ROUTES
from service.admin.mailing_preview import ROUTES as PREVIEW_ROUTES
from service.admin.mailings import ROUTES as MAILING_ROUTES
from service.admin.schedules import ROUTES as SCHEDULE_ROUTES
from service.admin.users_page import ROUTES as USER_ROUTES
from service.admin.web import current_session, problem, refuse

STATIC_DIR = Path(__file__).resolve().parent / "static"

ROUTES: list[BaseRoute] = [
    *LOGIN_ROUTES,
    *DASHBOARD_ROUTES,
    *AUDIT_ROUTES,
    *MAILING_ROUTES,
    *PREVIEW_ROUTES,
    *SCHEDULE_ROUTES,
    *USER_ROUTES,
    *DELIVERY_ROUTES,
    *EVENT_ROUTES,
    *LOOKUP_ROUTES,
    *CONSUMER_ROUTES,
    Mount("/static", StaticFiles(directory=STATIC_DIR), name="admin-static"),
]


MESSAGES = {404: "There is no page {path} here.", 405: "{path} takes no {method} here."}


async def _answer(scope: Scope, receive: Receive, send: Send, status: int) -> None:
    """An unknown /admin path (404) or method (405): the panel's own page, with its
    navigation when signed in, not the API's JSON; a signed-in admin's POST is a refused
    action, audited as such."""
    request = Request(scope, receive)
    who = await current_session(request)
    signed_in = who if who is not None and who.logged_in else None
    message = MESSAGES[status].format(path=request.url.path, method=request.method)
    if signed_in is not None and request.method == "POST":
        response = await refuse(request, signed_in, status, message, f"HTTP {status}")
    else:
        response = problem(request, signed_in, status, message)
    await response(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(scope, receive, send, 404)


class _Gate:
    """The panel's routes, or a 404 for all of them when [admin].enabled is off."""

    def __init__(self) -> None:
        self.router = Router(routes=ROUTES, default=_not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state.mn
        if not state.config.admin.enabled:
            raise HTTPException(404, "Not Found")
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            # A known path with another method (405), or a static file that is not there.
            if exc.status_code not in MESSAGES:
                raise
            await _answer(scope, receive, send, exc.status_code)


def admin_mount() -> Mount:
    return Mount("/admin", app=_Gate())
