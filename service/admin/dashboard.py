"""The dashboard: traffic, deliveries, backlog and dead letters at a glance."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import page, render


@page("manager")
async def dashboard(request: Request, who: Session) -> Response:
    return render(request, who, "dashboard.html", {"title": "Dashboard"})


ROUTES = [Route("/", dashboard, methods=["GET"])]
