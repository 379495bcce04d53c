"""Every HTTP route of the notification half, mounted by service/app.py, and which of
them a signed-in user's browser calls (service/cors.py)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from service.notify.embed import ROUTES as EMBED_ROUTES
from service.notify.events import ROUTES as EVENT_ROUTES
from service.notify.inbox import ROUTES as INBOX_ROUTES
from service.notify.inbox_stream import ROUTES as STREAM_ROUTES
from service.notify.preference_center import ROUTES as PREFERENCE_CENTER_ROUTES
from service.notify.preferences import ROUTES as PREFERENCE_ROUTES
from service.notify.unsubscribe import ROUTES as UNSUBSCRIBE_ROUTES
from service.notify.users import ROUTES as USER_ROUTES
from service.notify.webpush_api import ROUTES as WEBPUSH_ROUTES

ROUTES: list[BaseRoute] = [
    *UNSUBSCRIBE_ROUTES,
    *PREFERENCE_CENTER_ROUTES,
    *EVENT_ROUTES,
    *USER_ROUTES,
    *WEBPUSH_ROUTES,
    *PREFERENCE_ROUTES,
    *INBOX_ROUTES,
    *STREAM_ROUTES,
    *EMBED_ROUTES,
]
# The user's own endpoints, and every path below them (the inbox's stream).
BROWSER_PATHS = ("/v1/inbox", "/v1/preferences")
