"""Notification preferences: what a user receives, on which channel, and when.

- `GET` / `PUT /v1/preferences`: the signed-in client's own (identified as for
  POST /v1/seen: a client token, or a client from the trusted gateway).
- `GET` / `PUT /v1/users/{id}/preferences`: any user's, for services (users:read /
  users:write).

Both answer the effective preferences: every configured category with every channel
switched on or off (the user's switch, else the category's configured default, else on),
the user's quiet hours, and which categories are transactional (always on: muting and
quiet hours spare them too), computed in SQL by the rule the fan-out applies
(sql/notify/functions/notify_effective_preferences.sql). PUT replaces the user's
switches, so a switch left out falls back to its default; it answers like GET. An unknown
category or channel, a transactional category switched off, or malformed quiet hours are
refused and nothing is written. The preference center's page writes through the same
check and query (save_preferences()).
"""

from __future__ import annotations

import msgspec
import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.config.load import Config
from service.errors import api_error, unknown_name_error
from service.http import json_response, read_json
from service.notify.notify_wire import Preferences, PreferencesBody
from service.notify.request_parts import client_user, user_id_param
from service.sql import q
from service.state import State, state_of

BODY_BYTES = 64 * 1024

_decode_body = msgspec.json.Decoder(PreferencesBody).decode
_encode = msgspec.json.Encoder().encode


def check(config: Config, body: PreferencesBody) -> None:
    for name, switches in body.categories.items():
        category = config.categories.get(name)
        if category is None:
            raise unknown_name_error("unknown_category", "category", name, config.categories)
        for channel, on in switches.items():
            if channel not in config.channels:
                raise unknown_name_error(
                    "unknown_channel", "channel", channel, config.channels, f"categories.{name}: "
                )
            if category.transactional and not on:
                raise api_error(
                    "transactional_category",
                    f"{name!r} is transactional: its notifications cannot be switched off.",
                )
    for channel, window in body.quiet_hours.items():
        if channel not in config.channels:
            raise unknown_name_error(
                "unknown_channel", "channel", channel, config.channels, "quiet_hours: "
            )
        if window.start == window.end:
            raise api_error(
                "invalid_quiet_hours", f"quiet_hours.{channel}: start and end are the same."
            )


async def load_preferences(state: State, user_id: str) -> Preferences:
    """A user's effective preferences, as GET answers them, or `unknown_user`."""
    params = state.config.preference_params() | {"user_id": user_id}
    async with state.pool.connection() as conn:
        cur = await conn.execute(q("get_preferences"), params)
        row = await cur.fetchone()
    if row is None:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    return msgspec.convert(row[0], Preferences)


async def _read(request: Request, user_id: str) -> Response:
    return json_response(await load_preferences(state_of(request), user_id))


async def save_preferences(state: State, user_id: str, body: PreferencesBody) -> Preferences:
    """Replace a user's preferences with `body`, refused by check() as PUT refuses it:
    the effective preferences now, or `unknown_user` (nothing written). The API's PUT and
    the preference center (service/notify/preference_center.py) both write through this."""
    check(state.config, body)
    params = state.config.preference_params() | {
        "user_id": user_id,
        "muted": body.muted,
        "switches": _encode(body.categories).decode(),
        "quiet_hours": _encode(body.quiet_hours).decode(),
    }
    try:
        async with state.pool.connection() as conn:
            cur = await conn.execute(q("put_preferences"), params)
            row = await cur.fetchone()
    except psycopg.errors.ForeignKeyViolation:
        # The user was erased while this was written.
        row = None
    if row is None:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    return msgspec.convert(row[0], Preferences)


async def _write(request: Request, user_id: str) -> Response:
    state = state_of(request)
    limit = max(state.config.api.max_body_bytes, BODY_BYTES)
    body = await read_json(request, _decode_body, limit, {"$.quiet_hours": "invalid_quiet_hours"})
    return json_response(await save_preferences(state, user_id, body))


async def get_own(request: Request) -> Response:
    return await _read(request, client_user(request))


async def put_own(request: Request) -> Response:
    return await _write(request, client_user(request))


async def get_users(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:read")
    return await _read(request, user_id_param(request))


async def put_users(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    return await _write(request, user_id_param(request))


ROUTES: list[BaseRoute] = [
    Route("/v1/preferences", get_own, methods=["GET"]),
    Route("/v1/preferences", put_own, methods=["PUT"]),
    Route("/v1/users/{user_id}/preferences", get_users, methods=["GET"]),
    Route("/v1/users/{user_id}/preferences", put_users, methods=["PUT"]),
]
