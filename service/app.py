"""The HTTP API (Starlette): health, readiness, OpenAPI and error handling, with the
capabilities it mounts (service/seen/, service/notify/), all sharing one process State."""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics, openapi
from service.admin.mount import admin_mount
from service.config.load import Config, load_config
from service.cors import browser_cors, is_browser_path
from service.database import database_unreachable, make_pool, resolve_url
from service.dev.demo_page import demo_mount
from service.errors import ApiError, api_error
from service.http import error_response, json_response, serve_logged
from service.http_limits import headers_too_large, refuse_headers
from service.notify import embed, notify_openapi
from service.notify.catalog import sync_catalog_soon
from service.notify.routes import BROWSER_PATHS as NOTIFY_BROWSER_PATHS
from service.notify.routes import ROUTES as NOTIFY_ROUTES
from service.notify.templates import load_templates
from service.schedule.actions import PoolScheduleActions
from service.schedule.backend import current_state
from service.seen import seen_openapi
from service.seen.endpoint import post_seen
from service.seen.store import GroupCommitter
from service.sql import q
from service.state import MarkWriter, State, state_of
from service.wire import Health, Index, Readiness, SchedulerHealth

log = logging.getLogger(__name__)

# The documented API: the core's paths and those of every capability mounted below.
OPENAPI_SECTIONS = (
    seen_openapi.SECTION,
    notify_openapi.SECTION,
    embed.OPENAPI_SECTION,
    metrics.OPENAPI_SECTION,
)
# What a signed-in user's browser calls, from another site's page too (service/cors.py).
BROWSER_PATHS = ("/v1/seen", *NOTIFY_BROWSER_PATHS)


class _AsgiEndpoint:
    """Makes Starlette route to an ASGI function as an app, not as a request handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class MarkNotifyApp(Starlette):
    """Starlette, with POST /v1/seen taken straight to its endpoint. The route is still
    registered (so e.g. GET /v1/seen is a 405); this only skips the layers it would pass
    through on the way."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Before anything reads a header: bounds that hold under any server.
        if scope["type"] == "http" and headers_too_large(scope):
            await refuse_headers(send)
            return
        if scope["type"] == "http" and is_browser_path(scope["path"], BROWSER_PATHS):
            cors = self._cors()
            if cors is not None:
                await cors(scope, receive, send)
                return
        await self._route(scope, receive, send)

    def _cors(self) -> ASGIApp | None:
        # Built on first use: the config is the lifespan's.
        if not hasattr(self.state, "cors"):
            origins = self.state.mn.config.api.cors_origins
            self.state.cors = browser_cors(self._route, origins)
        cors: ASGIApp | None = self.state.cors
        return cors

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/seen" and scope["method"] == "POST":
            scope["app"] = self
            await post_seen(scope, receive, send)
            return
        if scope["type"] == "http":
            # The fast path above writes its own request line.
            await serve_logged(self._measured, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _measured(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Outside Starlette's middlewares: the 500 or 503 they answer is what is counted.
        await metrics.measure(super().__call__, scope, receive, send)


async def healthz(request: Request) -> Response:
    return json_response(Health("ok"))


async def readyz(request: Request) -> Response:
    state = state_of(request)
    try:
        async with state.pool.connection() as conn:
            cur = await conn.execute(q("schema_revision"))
            row = await cur.fetchone()
            revision = row[0] if row else None
            scheduler = await current_state(conn) if revision == state.head else None
    except (PoolTimeout, psycopg.Error) as exc:
        return json_response(Health("unavailable", f"database: {type(exc).__name__}"), 503)
    if revision != state.head:
        return json_response(
            Health("unavailable", f"schema at {revision}, code expects {state.head}"), 503
        )
    backend = SchedulerHealth(
        backend=scheduler.backend if scheduler else None,
        detail=scheduler.detail if scheduler else "not chosen yet: no dispatcher has started",
    )
    return json_response(Readiness("ok", scheduler=backend))


async def openapi_json(request: Request) -> Response:
    # Built once per app, from its config: the names it accepts are the configured ones.
    body = getattr(request.app.state, "openapi_json", None)
    if body is None:
        document = openapi.configured_document(state_of(request).config, *OPENAPI_SECTIONS)
        body = request.app.state.openapi_json = msgspec.json.encode(document)
    return Response(body, media_type="application/json")


async def index(request: Request) -> Response:
    """Where to go from here, instead of a bare 404 for whoever opens the root."""
    links = Index(admin="/admin/" if state_of(request).config.admin.enabled else None)
    if "text/html" not in request.headers.get("accept", ""):
        return json_response(links)
    items = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(name)}</a></li>'
        for name, path in msgspec.structs.asdict(links).items()
        if path and path.startswith("/")
    )
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>mark-notify'
        f"</title></head><body><h1>mark-notify</h1><ul>{items}</ul>"
        f"<p>Documentation: {html.escape(links.docs)}.</p></body></html>\n"
    )


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_body")
    return error_response(ApiError(exc.status_code, code, str(exc.detail), exc.headers))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    if database_unreachable(exc):
        return error_response(state_of(request).unavailable())
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(api_error("internal_error"))


WriterFactory = Callable[[AsyncConnectionPool, Config], MarkWriter]


def group_committer(pool: AsyncConnectionPool, config: Config) -> MarkWriter:
    # Half the pool commits while the other half serves readiness checks and spikes.
    return GroupCommitter(
        pool,
        max_inflight=max(1, config.database.pool_max // 2),
        inbox_tag=config.notify.seen_tag,
    )


def create_app(config: Config | None = None, writer: WriterFactory = group_committer) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        cfg = config or load_config()
        pool = make_pool(
            resolve_url(cfg.database), cfg.database, name="mark-notify-api", autocommit=True
        )
        # Built before the pool opens: bad identity settings, or a template that does
        # not compile (naming its file), fail start-up with nothing left running.
        app.state.mn = State(
            cfg, pool, writer(pool, cfg), load_templates(cfg), PoolScheduleActions(pool, cfg)
        )
        # The API starts even with the database down: it answers 503 until it is back.
        await pool.open(wait=False)
        await sync_catalog_soon(app.state.mn)
        try:
            yield
        finally:
            for task in app.state.mn.background:
                task.cancel()
            await app.state.mn.committer.close()
            metrics.worker_stopped()
            await pool.close()

    routes = [
        Route("/v1/seen", _AsgiEndpoint(post_seen), methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
        *NOTIFY_ROUTES,
    ]
    routes += [admin_mount(), demo_mount()]
    handlers: dict[Any, Any] = {
        ApiError: on_api_error,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }
    return MarkNotifyApp(routes=routes, exception_handlers=handlers, lifespan=lifespan)
