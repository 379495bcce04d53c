"""Every HTTP route of the notification half, mounted by service/app.py, and which of
them a signed-in user's browser calls (service/cors.py)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from service.notify import inbox_stream
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
# The signed-in user's own endpoints, which the <mark-notify-inbox> element calls. Not the
# preference center's pages: a form of this origin, under its own link.
BROWSER_PATHS = (
    "/v1/inbox",
    "/v1/inbox/stream-token",
    inbox_stream.PATH,
    "/v1/preferences",
)
