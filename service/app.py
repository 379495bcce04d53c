"""The HTTP API (Starlette): POST /v1/seen, health, readiness, OpenAPI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
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

from service import openapi
from service.config import Config, load_config
from service.database import make_pool, resolve_url
from service.errors import ApiError, api_error
from service.identity import ANONYMOUS, Authenticator, check_caller
from service.messages import ErrorBody, Health, SeenBatchResult, SeenItem, SeenRequest, SeenResult
from service.migrate import head_revision
from service.sql import q
from service.store import GroupCommitter, MarkRow, MarkWriter, StorageUnavailable

log = logging.getLogger(__name__)

_decode_seen = msgspec.json.Decoder(SeenRequest).decode
_encode = msgspec.json.Encoder().encode
JSON_TYPES = ("application/json",)


def json_response(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encode(body), status, headers, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    return json_response(ErrorBody(exc.code, exc.message), exc.status, exc.headers)


class State:
    """Everything a request needs, built once per process at start-up."""

    def __init__(self, config: Config, pool: AsyncConnectionPool, writer: MarkWriter) -> None:
        self.config = config
        self.pool = pool
        self.auth = Authenticator(config.identity, config.environment)
        self.committer = writer
        self.head = head_revision()

    def unavailable(self) -> ApiError:
        # A new error each time: raising one shared instance would chain every request's
        # traceback (and the frames it holds) onto it for as long as the outage lasts.
        return api_error("database_unavailable", retry_after=str(self.config.api.retry_after_s))


def _state(request: Request) -> State:
    state: State = request.app.state.mn
    return state


async def read_json_body(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise api_error("unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise api_error("payload_too_large", f"The body is over {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise api_error("payload_too_large", f"The body is over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_seen(body: bytes, max_batch: int) -> tuple[list[SeenItem], bool]:
    """The items of a seen request and whether it was the batch form."""
    try:
        request = _decode_seen(body)
    except msgspec.ValidationError as exc:
        raise api_error("invalid_body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise api_error("malformed_json", str(exc)) from None
    except UnicodeDecodeError:
        # msgspec reports invalid UTF-8 inside a string this way, not as a DecodeError.
        raise api_error("malformed_json", "The body is not valid UTF-8.") from None
    if request.items is not None:
        if request.tag is not None or request.id is not None:
            raise api_error("invalid_body", "Send either `tag` and `id`, or `items`, not both.")
        if len(request.items) > max_batch:
            raise api_error("batch_too_large", f"At most {max_batch} items per request.")
        return list(request.items), True
    if request.tag is None or request.id is None:
        raise api_error("invalid_body", "Send `tag` and `id`, or a non-empty `items` list.")
    return [SeenItem(request.tag, request.id)], False


async def post_seen(request: Request) -> Response:
    state = _state(request)
    config = state.config
    body = await read_json_body(request, config.api.max_body_bytes)
    peer = request.client.host if request.client else None
    caller = state.auth.authenticate(request.headers, peer)
    items, batch = parse_seen(body, config.api.max_batch)

    idempotency_key = request.headers.get("idempotency-key")
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
    except Exception:
        # Answered here rather than by on_unexpected, which Starlette follows by re-raising
        # to the server: one log record with the trace, and a plain JSON 500 to the client.
        log.exception("could not record %d marks; nothing was stored", len(rows))
        raise api_error("internal_error") from None
    results = [
        SeenResult(r.tag, r.item_id, "recorded" if r.key in new else "duplicate") for r in rows
    ]
    # A batch may repeat a mark: only its first position is the one that was recorded.
    seen: set[tuple[str, str, str]] = set()
    for n, r in enumerate(rows):
        if r.key in seen:
            results[n] = SeenResult(r.tag, r.item_id, "duplicate")
        seen.add(r.key)
    if batch:
        return json_response(SeenBatchResult(results))
    return json_response(results[0])


async def healthz(request: Request) -> Response:
    return json_response(Health("ok"))


async def readyz(request: Request) -> Response:
    state = _state(request)
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
    return Response(openapi.api_document_json(), media_type="application/json")


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_body")
    return error_response(ApiError(exc.status_code, code, str(exc.detail), exc.headers))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PoolTimeout | psycopg.OperationalError):
        return error_response(_state(request).unavailable())
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
        # Built before the pool opens: bad identity settings fail start-up with nothing
        # left running.
        app.state.mn = State(cfg, pool, writer(pool, cfg))
        # The API starts even with the database down: it answers 503 until it is back.
        await pool.open(wait=False)
        try:
            yield
        finally:
            await app.state.mn.committer.close()
            await pool.close()

    routes = [
        Route("/v1/seen", post_seen, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {
        ApiError: on_api_error,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
