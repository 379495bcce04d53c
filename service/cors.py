"""CORS for the endpoints a signed-in user's browser calls: which other sites' pages may
call them (`[api] cors_origins`), answered by Starlette's CORSMiddleware.

None by default: the browser then keeps pages of other origins from reading any answer,
as before. Only the browser-facing paths the composition root names (the seen marks, the
inbox and its stream, the user's own preferences) get CORS headers; the producers' and
operators' endpoints never do, whatever the setting. No cookies are involved (the client
JWT goes in `Authorization`, a stream token in the URL), so credentials stay off.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

METHODS = ("GET", "POST", "PUT")
# Idempotency-Key: an anonymous seen mark's; Last-Event-ID: an EventSource's reconnect.
HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID")
EXPOSED = ("Retry-After", "X-Request-Id")
PREFLIGHT_CACHE_S = 600


def is_browser_path(path: str, paths: Sequence[str]) -> bool:
    """Whether `path` is one of `paths`, exactly: a new endpoint is not opened by being
    below one."""
    return path in paths


def browser_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp | None:
    """`app` behind CORS for `origins`; None when there are none (same-origin only)."""
    if not origins:
        return None
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=METHODS,
        allow_headers=HEADERS,
        expose_headers=EXPOSED,
        max_age=PREFLIGHT_CACHE_S,
    )
