"""The HTTP API (Starlette): POST /v1/seen, health, readiness, OpenAPI, and the routes of
the capabilities it mounts (service/notify/), all sharing one process State."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import openapi
from service.config import Config, load_config
from service.database import make_pool, resolve_url
from service.errors import ApiError, api_error
from service.http import (
    DECODE_ERRORS,
    ClientGone,
    check_json_headers,
    decode_error,
    encode,
    error_body,
    error_response,
    json_response,
    read_body,
)
from service.identity import ANONYMOUS, check_caller
from service.messages import Health, SeenBatchResult, SeenItem, SeenRequest, SeenResult
from service.notify import openapi as notify_openapi
from service.notify.catalog import sync_catalog_soon
from service.notify.routes import ROUTES as NOTIFY_ROUTES
from service.notify.templates import load_templates
from service.sql import q
from service.state import State, state_of
from service.store import GroupCommitter, MarkRow, MarkWriter, StorageUnavailable

log = logging.getLogger(__name__)

_decode_seen = msgspec.json.Decoder(SeenRequest).decode
# The documented API: the core's paths and those of every capability mounted below.
OPENAPI_SECTIONS = (notify_openapi.SECTION,)


def parse_seen(body: bytes, max_batch: int) -> tuple[list[SeenItem], bool]:
    """The items of a seen request and whether it was the batch form."""
    try:
        request = _decode_seen(body)
    except DECODE_ERRORS as exc:
        raise decode_error(exc) from None
    if request.items is not None:
        if request.tag is not None or request.id is not None:
            raise api_error("invalid_body", "Send either `tag` and `id`, or `items`, not both.")
        if len(request.items) > max_batch:
            raise api_error("batch_too_large", f"At most {max_batch} items per request.")
        return list(request.items), True
    if request.tag is None or request.id is None:
        raise api_error("invalid_body", "Send `tag` and `id`, or a non-empty `items` list.")
    return [SeenItem(request.tag, request.id)], False


async def record_seen(
    state: State, headers: Mapping[str, str], peer: str | None, body: bytes
) -> SeenResult | SeenBatchResult:
    """POST /v1/seen on plain inputs: the answer, or an ApiError."""
    config = state.config
    caller = state.auth.authenticate(headers, peer)
    items, batch = parse_seen(body, config.api.max_batch)

    idempotency_key = headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise api_error("invalid_body", "Idempotency-Key must be 1 to 255 characters.")

    rows: list[MarkRow] = []
    for item in items:
        tag = config.tags.get(item.tag)
        if tag is None:
            raise api_error("unknown_tag", f"Unknown tag {item.tag!r}.")
        refusal = check_caller(caller, tag.event_type, item.tag)
        if refusal is not None:
            raise refusal
        if tag.event_type == "anonymous":
            # Anonymous marks have no subject; the client's Idempotency-Key, when sent, is
            # what makes a retry a repeat.
            subject_key = (
                f"anonymous:key:{idempotency_key}"
                if idempotency_key
                else f"anonymous:{uuid.uuid4().hex}"
            )
            mark_caller = ANONYMOUS
        else:
            subject_key = caller.key
            mark_caller = caller
        rows.append(
            MarkRow(
                tag=item.tag,
                item_id=item.id,
                subject_key=subject_key,
                subject_kind=tag.event_type,
                subject=mark_caller.subject,
                consumer=tag.consumer,
                remember_for_s=tag.remember_for.total_seconds(),
            )
        )

    try:
        new = await state.committer.submit(rows)
    except StorageUnavailable:
        raise state.unavailable() from None
    results = [
        SeenResult(r.tag, r.item_id, "recorded" if r.key in new else "duplicate") for r in rows
    ]
    # A batch may repeat a mark: only its first position is the one that was recorded.
    seen: set[tuple[str, str, str]] = set()
    for n, r in enumerate(rows):
        if r.key in seen:
            results[n] = SeenResult(r.tag, r.item_id, "duplicate")
        seen.add(r.key)
    return SeenBatchResult(results) if batch else results[0]


_JSON_HEADER = (b"content-type", b"application/json")


async def post_seen(scope: Scope, receive: Receive, send: Send) -> None:
    """The hot endpoint as a bare ASGI app: no Request/Response objects, and (reached
    through MarkNotifyApp) no router or exception middlewares, which were most of the
    API's CPU per request. It answers every error itself, as JSON."""
    state: State = scope["app"].state.mn
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    extra: dict[str, str] = {}
    try:
        check_json_headers(headers, state.config.api.max_body_bytes)
        body = await read_body(receive, state.config.api.max_body_bytes)
        client = scope.get("client")
        answer: msgspec.Struct = await record_seen(
            state, headers, client[0] if client else None, body
        )
        status = 200
    except ClientGone:
        return
    except ApiError as exc:
        status, answer, extra = exc.status, error_body(exc), exc.headers
    except Exception:
        log.exception("unhandled error on POST /v1/seen")
        error = api_error("internal_error")
        status, answer = error.status, error_body(error)
    payload = encode(answer)
    response_headers = [_JSON_HEADER, (b"content-length", str(len(payload)).encode())]
    response_headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})


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
        if scope["type"] == "http" and scope["path"] == "/v1/seen" and scope["method"] == "POST":
            scope["app"] = self
            await post_seen(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def healthz(request: Request) -> Response:
    return json_response(Health("ok"))


async def readyz(request: Request) -> Response:
    state = state_of(request)
    try:
        async with state.pool.connection() as conn:
            cur = await conn.execute(q("schema_revision"))
            row = await cur.fetchone()
    except (PoolTimeout, psycopg.Error) as exc:
        return json_response(Health("unavailable", f"database: {type(exc).__name__}"), 503)
    revision = row[0] if row else None
    if revision != state.head:
        return json_response(
            Health("unavailable", f"schema at {revision}, code expects {state.head}"), 503
        )
    return json_response(Health("ok"))


async def openapi_json(request: Request) -> Response:
    return Response(openapi.api_document_json(*OPENAPI_SECTIONS), media_type="application/json")


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_body")
    return error_response(ApiError(exc.status_code, code, str(exc.detail), exc.headers))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PoolTimeout | psycopg.OperationalError):
        return error_response(state_of(request).unavailable())
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(api_error("internal_error"))


WriterFactory = Callable[[AsyncConnectionPool, Config], MarkWriter]


def group_committer(pool: AsyncConnectionPool, config: Config) -> MarkWriter:
    # Half the pool commits while the other half serves readiness checks and spikes.
    return GroupCommitter(pool, max_inflight=max(1, config.database.pool_max // 2))


def create_app(config: Config | None = None, writer: WriterFactory = group_committer) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        cfg = config or load_config()
        pool = make_pool(
            resolve_url(cfg.database), cfg.database, name="mark-notify-api", autocommit=True
        )
        # Built before the pool opens: bad identity settings, or a template that does
        # not compile (naming its file), fail start-up with nothing left running.
        app.state.mn = State(cfg, pool, writer(pool, cfg), load_templates(cfg))
        # The API starts even with the database down: it answers 503 until it is back.
        await pool.open(wait=False)
        await sync_catalog_soon(app.state.mn)
        try:
            yield
        finally:
            for task in app.state.mn.background:
                task.cancel()
            await app.state.mn.committer.close()
            await pool.close()

    routes = [
        Route("/v1/seen", _AsgiEndpoint(post_seen), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *NOTIFY_ROUTES,
    ]
    handlers: dict[Any, Any] = {
        ApiError: on_api_error,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }
    return MarkNotifyApp(routes=routes, exception_handlers=handlers, lifespan=lifespan)
