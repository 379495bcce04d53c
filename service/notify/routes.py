"""Every HTTP route of the notification half, mounted by service/app.py."""

from __future__ import annotations

from starlette.routing import BaseRoute

from service.notify.unsubscribe import ROUTES as UNSUBSCRIBE_ROUTES

ROUTES: list[BaseRoute] = [*UNSUBSCRIBE_ROUTES]
