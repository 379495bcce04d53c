"""Recipients, kept by producer services: users, their push devices, their topics (their
browsers' Web Push subscriptions: service/notify/webpush_api.py).

- `PUT /v1/users/{id}` (users:write) replaces the user whole: a field left out is cleared
  and `devices` becomes the user's exact device list. 201 when the user is new, else 200,
  with the stored user.
- `PUT /v1/users` (users:write) imports up to 1000 users (`{"users": [...]}`), each
  replaced as by the single PUT, in one statement.
- `GET /v1/users/{id}` (users:read): the user, devices, topics and Web Push subscriptions.
- `DELETE /v1/users/{id}` (users:write) erases the user: contacts, devices, topics, Web
  Push subscriptions and preferences go; their notifications stay as anonymous history.
  204, or 404.
- `PUT` / `DELETE /v1/users/{id}/topics/{topic}` (users:write): join or leave an audience
  (204; both are no-ops when repeated).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from zoneinfo import available_timezones

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.errors import api_error
from service.http import json_response, read_json
from service.notify.notify_wire import (
    Device,
    UserBody,
    UserImport,
    UserRecord,
    UsersImported,
    UserView,
    WebPushSubscriptionView,
)
from service.notify.request_parts import printable, user_id_param
from service.sql import q
from service.state import state_of

# Bodies are bounded by the structures' own limits (devices per user, users per import);
# these only stop a body far beyond any valid one before it is decoded.
USER_BODY_BYTES = 128 * 1024
IMPORT_BODY_BYTES = 16 * 1024 * 1024

# Files of a tz database that are not zones: what they mean depends on the server.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})

_decode_user = msgspec.json.Decoder(UserBody).decode
_decode_import = msgspec.json.Decoder(UserImport).decode
_encode = msgspec.json.Encoder().encode


class ZoneNames:
    """The IANA time zones both zoneinfo and the database know, read once per process.
    The fan-out hands a user's zone to PostgreSQL's AT TIME ZONE, whose tz database may be
    older or newer than Python's: a zone it lacks would fail every notification of an
    event, so it is refused at the door instead."""

    def __init__(self) -> None:
        self._names: frozenset[str] | None = None

    async def get(self, pool: AsyncConnectionPool) -> frozenset[str]:
        if self._names is None:
            async with pool.connection() as conn:
                cur = await conn.execute(q("time_zone_names"))
                known = {r[0] for r in await cur.fetchall()}
            self._names = frozenset(available_timezones() & known) - NOT_ZONES
        return self._names


ZONES = ZoneNames()


async def check_time_zones(
    request: Request, zones: Iterable[tuple[str, str | None]], code: str = "invalid_body"
) -> None:
    """Every (where, zone) names a known zone or none (UTC); the first that does not is
    refused with `code`. A set lookup, unlike ZoneInfo(), never reads a path."""
    wanted = [(where, zone) for where, zone in zones if zone is not None]
    if not wanted:
        return
    names = await ZONES.get(state_of(request).pool)
    for where, zone in wanted:
        if zone not in names:
            raise api_error(code, f"{where}: unknown IANA time zone {zone!r}.")


def _check_devices(user: UserRecord, where: str) -> None:
    tokens = [d.token for d in user.devices]
    if len(set(tokens)) != len(tokens):
        raise api_error("invalid_body", f"{where}: a device token is listed twice.")


async def _put(conn: psycopg.AsyncConnection[Any], users: list[UserRecord]) -> tuple[int, int]:
    cur = await conn.execute(q("put_users"), {"users": _encode(users).decode()})
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _view(conn: psycopg.AsyncConnection[Any], user_id: str) -> UserView | None:
    cur = await conn.execute(q("get_user"), {"user_id": user_id})
    row = await cur.fetchone()
    if row is None:
        return None
    id_, email, phone, locale, timezone, devices, topics, subscriptions, created_at, updated_at = (
        row
    )
    return UserView(
        id=id_,
        email=email,
        phone=phone,
        locale=locale,
        timezone=timezone,
        devices=msgspec.convert(devices, list[Device]),
        topics=list(topics),
        webpush_subscriptions=msgspec.convert(subscriptions, list[WebPushSubscriptionView]),
        created_at=created_at,
        updated_at=updated_at,
    )


async def put_user(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    user_id = user_id_param(request)
    body = await read_json(request, _decode_user, USER_BODY_BYTES)
    record = UserRecord(id=user_id, **msgspec.structs.asdict(body))
    _check_devices(record, "user")
    await check_time_zones(request, [("timezone", record.timezone)])
    async with state_of(request).pool.connection() as conn:
        _, created = await _put(conn, [record])
        view = await _view(conn, user_id)
    if view is None:
        # Erased between the two statements: what the caller wrote is gone.
        raise api_error("unknown_user", f"User {user_id!r} was erased meanwhile.")
    return json_response(view, 201 if created else 200)


async def import_users(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    body = await read_json(request, _decode_import, IMPORT_BODY_BYTES)
    seen: set[str] = set()
    for n, user in enumerate(body.users):
        if user.id in seen:
            raise api_error("invalid_body", f"users[{n}]: user {user.id!r} is listed twice.")
        seen.add(user.id)
        _check_devices(user, f"users[{n}]")
    await check_time_zones(request, ((f"users[{n}]", u.timezone) for n, u in enumerate(body.users)))
    async with state_of(request).pool.connection() as conn:
        count, created = await _put(conn, list(body.users))
    return json_response(UsersImported(count, created))


async def get_user(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:read")
    user_id = user_id_param(request)
    async with state_of(request).pool.connection() as conn:
        view = await _view(conn, user_id)
    if view is None:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    return json_response(view)


async def delete_user(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    user_id = user_id_param(request)
    async with state_of(request).pool.connection() as conn:
        cur = await conn.execute(q("erase_user"), {"user_id": user_id})
        row = await cur.fetchone()
    if row is None or not row[0]:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    return Response(status_code=204)


def _topic(request: Request) -> str:
    topic: str = request.path_params["topic"]
    if not printable(topic, 256):
        raise api_error("invalid_topic")
    return topic


async def _topic_change(request: Request, query: str) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    user_id = user_id_param(request)
    params = {"user_id": user_id, "topic": _topic(request)}
    try:
        async with state_of(request).pool.connection() as conn:
            cur = await conn.execute(q(query), params)
            row = await cur.fetchone()
    except psycopg.errors.ForeignKeyViolation:
        # The user was erased while the topic was being added.
        row = (False,)
    if row is None or not row[0]:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    return Response(status_code=204)


async def add_topic(request: Request) -> Response:
    return await _topic_change(request, "add_user_topic")


async def remove_topic(request: Request) -> Response:
    return await _topic_change(request, "remove_user_topic")


ROUTES: list[BaseRoute] = [
    Route("/v1/users", import_users, methods=["PUT"]),
    Route("/v1/users/{user_id}", put_user, methods=["PUT"]),
    Route("/v1/users/{user_id}", get_user, methods=["GET"]),
    Route("/v1/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/v1/users/{user_id}/topics/{topic}", add_topic, methods=["PUT"]),
    Route("/v1/users/{user_id}/topics/{topic}", remove_topic, methods=["DELETE"]),
]
