"""HTTP in and out for every endpoint: JSON responses and error bodies, and JSON request
bodies checked (media type, size), read and decoded into stable error codes.

Both kinds of endpoint use these: Starlette handlers through `read_json`, and the bare
ASGI `POST /v1/seen` (service/seen/endpoint.py) through the pieces it is made of, so that its hot
path does no more than before: `check_json_headers`, `read_body` and, only when a body
is refused, `decode_error`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, api_error
from service.logs import log_request, request_context, request_id_from
from service.tracing import TraceContext, intake_trace, new_trace
from service.wire import ErrorBody

T = TypeVar("T")

encode = msgspec.json.Encoder().encode
JSON_TYPES = ("application/json",)
# What a msgspec decoder raises for a body it refuses (ValidationError is a DecodeError);
# RecursionError: JSON nested deeper than the interpreter's recursion limit, in an `Any`.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

_AT = re.compile(r" - at `(?P<path>\$[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def json_response(
    body: msgspec.Struct, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(encode(body), status, headers, media_type="application/json")


def error_body(exc: ApiError) -> ErrorBody:
    return ErrorBody(exc.code, exc.message, exc.allowed)


def error_response(exc: ApiError) -> Response:
    return json_response(error_body(exc), exc.status, exc.headers)


def check_json_headers(headers: Mapping[str, str], limit: int) -> None:
    """Refuse a body that is not JSON, or declares itself over `limit` bytes, before
    reading it."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise api_error("unsupported_media_type")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise api_error("payload_too_large", f"The body is over {limit} bytes.")


class ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body from the ASGI `receive`, refused as soon as it passes `limit` (a
    Content-Length may be absent, or lie)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise api_error("payload_too_large", f"The body is over {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _path_of(message: str) -> str:
    """The JSON path a msgspec validation message is about ("$" for the top level)."""
    at = _AT.search(message)
    if at:
        return at["path"]
    missing = _MISSING.match(message)
    return f"$.{missing['field']}" if missing else "$"


def _code_for(path: str, codes: Mapping[str, str]) -> str:
    for prefix, code in codes.items():
        if path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")):
            return code
    return "invalid_body"


def decode_error(exc: Exception, codes: Mapping[str, str] | None = None) -> ApiError:
    """The ApiError for a body a msgspec decoder refused with `exc` (one of
    DECODE_ERRORS): `malformed_json` for what is not JSON, else `invalid_body`, or the code
    `codes` gives the field the error is about (a JSON path such as "$.recipients")."""
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        return api_error(_code_for(_path_of(message), codes) if codes else "invalid_body", message)
    if isinstance(exc, RecursionError):
        return api_error("malformed_json", "The JSON is nested too deeply.")
    if isinstance(exc, UnicodeDecodeError):
        # msgspec reports invalid UTF-8 inside a string this way, not as a DecodeError.
        return api_error("malformed_json", "The body is not valid UTF-8.")
    return api_error("malformed_json", str(exc))


async def read_json(
    request: Request,
    decode: Callable[[bytes], T],
    limit: int,
    codes: Mapping[str, str] | None = None,
) -> T:
    """The body decoded by `decode`, or the ApiError that refuses it (see decode_error)."""
    check_json_headers(request.headers, limit)
    try:
        body = await read_body(request.receive, limit)
    except ClientGone:
        # Nobody is left to answer; an API error keeps it out of the error log.
        raise api_error("invalid_body", "The client disconnected mid-body.") from None
    try:
        return decode(body)
    except DECODE_ERRORS as exc:
        raise decode_error(exc, codes) from None


async def serve_logged(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one HTTP request through `app` with its request line (service/logs.py): the
    request id (the caller's X-Request-Id if well-formed, else new) is echoed in the
    response, and it and the trace id are on every line logged meanwhile."""
    started = time.perf_counter()
    raw_id = raw_trace = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            raw_id = value.decode("latin-1")
        elif name == b"traceparent":
            raw_trace = value.decode("latin-1")
    request_id = request_id_from(raw_id)
    trace = intake_trace(raw_trace)
    scope["trace"] = trace
    status = 500
    id_header = (b"x-request-id", request_id.encode())

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), id_header]
        await send(message)

    token = request_context.set((request_id, trace.trace_id))
    try:
        await app(scope, receive, send_with_id)
    finally:
        log_request(
            scope["method"],
            route_template(scope),
            status,
            started,
            request_id,
            trace.trace_id,
        )
        request_context.reset(token)


def route_template(scope: Scope) -> str | None:
    """The matched route's path as declared ("/v1/events/{event_id}"), never the path
    itself: ids in it would make every line unique, and may be personal. None: no route
    matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    # Inside a Mount, the route's path is relative to the mount's (static) prefix.
    root_path: str = scope.get("root_path", "")
    mounted = root_path[len(scope.get("app_root_path", "")) :]
    if isinstance(route, Mount):
        # Matched by a Mount itself (static files, or a whole mount that answered 404):
        # its prefix is already in root_path, and what follows it is any path.
        return mounted + "/{path}"
    return mounted + path


def request_trace(request: Request) -> TraceContext:
    """The API's span of this request (set by serve_logged; a new trace without it)."""
    trace = request.scope.get("trace")
    return trace if isinstance(trace, TraceContext) else new_trace()
