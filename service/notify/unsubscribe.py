"""One-click unsubscribe (RFC 8058) — being written."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
