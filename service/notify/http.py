"""HTTP plumbing shared by the notification endpoints: the process State, JSON bodies in
and out with stable error codes, path parameters, and the signed-in client.

The endpoints here cannot import service.app at import time (it imports them to mount
their routes), so the little they share with it is repeated here, not imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.errors import api_error
from service.messages import ClientSubject

if TYPE_CHECKING:
    from service.app import State

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_AT = re.compile(r" - at `(?P<path>\$[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


def state_of(request: Request) -> State:
    state: State = request.app.state.mn
    return state


def json_response(body: msgspec.Struct, status: int = 200, **headers: str) -> Response:
    return Response(_encode(body), status, headers or None, media_type="application/json")


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


async def read_json(
    request: Request,
    decode: Callable[[bytes], T],
    limit: int,
    codes: Mapping[str, str] | None = None,
) -> T:
    """The body decoded by `decode`. A validation error about a field listed in `codes`
    (a JSON path such as "$.recipients") gets that code; any other, `invalid_body`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise api_error("unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise api_error("payload_too_large", f"The body is over {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise api_error("payload_too_large", f"The body is over {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; an API error keeps it out of the error log.
        raise api_error("invalid_body", "The client disconnected mid-body.") from None
    try:
        return decode(b"".join(chunks))
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise api_error(_code_for(_path_of(message), codes or {}), message) from None
    except msgspec.DecodeError as exc:
        raise api_error("malformed_json", str(exc)) from None
    except UnicodeDecodeError:
        # msgspec reports invalid UTF-8 inside a string this way, not as a DecodeError.
        raise api_error("malformed_json", "The body is not valid UTF-8.") from None


def printable(value: str, max_length: int) -> bool:
    """Whether a path parameter is 1 to max_length printable characters (Starlette has
    already decoded %-escapes, so a %00 arrives here as a NUL)."""
    return 0 < len(value) <= max_length and _PRINTABLE.fullmatch(value) is not None


def user_id_param(request: Request) -> str:
    # Routing has already split on "/", so this is the same rule as messages.UserId.
    value: str = request.path_params["user_id"]
    if not printable(value, 128):
        raise api_error("invalid_user_id")
    return value


def client_user(request: Request) -> str:
    """The signed-in client's user id, identified exactly as POST /v1/seen does; service
    keys, drivers and anonymous callers are refused."""
    state = state_of(request)
    peer = request.client.host if request.client else None
    caller = state.auth.authenticate(request.headers, peer)
    if isinstance(caller.subject, ClientSubject):
        return caller.subject.user_id
    if caller.kind == "anonymous":
        raise api_error("unauthenticated", "Sign in: this endpoint needs a client's token.")
    raise api_error("client_identity_required", f"A {caller.kind} cannot use this endpoint.")
