"""Request pieces particular to the notification endpoints: user ids in paths, and the
signed-in client of the user-facing endpoints. JSON in and out is service/http.py's."""

from __future__ import annotations

from starlette.requests import Request

from service.errors import api_error
from service.state import state_of
from service.text_rules import is_safe
from service.wire import ClientSubject


def printable(value: str, max_length: int) -> bool:
    """Whether a path parameter is 1 to max_length characters that service/text_rules.py
    allows (Starlette has already decoded %-escapes, so a %00 arrives here as a NUL)."""
    return is_safe(value, max_length)


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
