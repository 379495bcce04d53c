"""Browsers' Web Push subscriptions (docs/webpush.md), registered through the users API.

- `GET /v1/webpush-key` (public): the VAPID public key a page subscribes with.
- `PUT` / `DELETE /v1/webpush-subscriptions`: the signed-in client's own browser
  (identified as for POST /v1/seen), as a page registers itself after subscribing.
- `PUT` / `DELETE /v1/users/{id}/webpush-subscriptions` (users:write): any user's, for
  services that keep subscriptions themselves.

PUT takes the browser's PushSubscription JSON as it is (`subscription.toJSON()`) and
answers it as stored: 201 when the endpoint is new (or was another user's), else 200 with
its keys replaced. DELETE takes `{"endpoint": ...}` and answers 204 (also when there was
no such subscription). The endpoint must be at a known push service and the keys a real
P-256 point and a 16-byte secret (service/webpush.py); else `invalid_subscription`, and
nothing is written.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service import webpush
from service.config.notify import WebPushSettings
from service.errors import api_error
from service.http import json_response, read_json
from service.notify.notify_wire import (
    WebPushEndpoint,
    WebPushKey,
    WebPushSubscription,
    WebPushSubscriptionView,
)
from service.notify.request_parts import client_user, user_id_param
from service.sql import q
from service.state import state_of

# A subscription is a few hundred bytes; this only stops a body far beyond any valid one.
BODY_BYTES = 8 * 1024
# Bad keys or endpoints, wherever msgspec finds them, have the code their checks have.
CODES = {"$.endpoint": "invalid_subscription", "$.keys": "invalid_subscription"}

_decode_subscription = msgspec.json.Decoder(WebPushSubscription).decode
_decode_endpoint = msgspec.json.Decoder(WebPushEndpoint).decode


def _settings(request: Request) -> WebPushSettings:
    settings = state_of(request).config.notify.webpush
    if settings is None:
        raise api_error("webpush_not_configured")
    return settings


async def public_key(request: Request) -> Response:
    key = webpush.private_key(_settings(request).vapid_private_key)
    return json_response(WebPushKey(webpush.public_key_text(key)))


async def _put(request: Request, user_id: str) -> Response:
    settings = _settings(request)
    body = await read_json(request, _decode_subscription, BODY_BYTES, CODES)
    try:
        webpush.check_endpoint(body.endpoint, settings, state_of(request).config.environment)
        webpush.check_keys(body.keys.p256dh, body.keys.auth)
    except ValueError as exc:
        raise api_error("invalid_subscription", f"{exc}.") from None
    expires = body.expirationTime
    params = {
        "user_id": user_id,
        "endpoint": body.endpoint,
        "p256dh": body.keys.p256dh,
        "auth": body.keys.auth,
        "expires_at": None if expires is None else datetime.fromtimestamp(expires / 1000, UTC),
    }
    try:
        async with state_of(request).pool.connection() as conn:
            cur = await conn.execute(q("put_webpush_subscription"), params)
            row = await cur.fetchone()
    except psycopg.errors.ForeignKeyViolation:
        # The user was erased while this was written.
        row = None
    if row is None or not row[0]:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    _, created, expiration_time, created_at = row
    view = WebPushSubscriptionView(
        endpoint=body.endpoint, expiration_time=expiration_time, created_at=created_at
    )
    return json_response(view, 201 if created else 200)


async def _delete(request: Request, user_id: str) -> Response:
    _settings(request)
    body = await read_json(request, _decode_endpoint, BODY_BYTES)
    async with state_of(request).pool.connection() as conn:
        cur = await conn.execute(
            q("delete_webpush_subscription"), {"user_id": user_id, "endpoint": body.endpoint}
        )
        row = await cur.fetchone()
    if row is None or not row[0]:
        raise api_error("unknown_user", f"No user {user_id!r}.")
    return Response(status_code=204)


async def put_own(request: Request) -> Response:
    return await _put(request, client_user(request))


async def delete_own(request: Request) -> Response:
    return await _delete(request, client_user(request))


async def put_users(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    return await _put(request, user_id_param(request))


async def delete_users(request: Request) -> Response:
    await state_of(request).keys.require_scope(request, "users:write")
    return await _delete(request, user_id_param(request))


ROUTES: list[BaseRoute] = [
    Route("/v1/webpush-key", public_key, methods=["GET"]),
    Route("/v1/webpush-subscriptions", put_own, methods=["PUT"]),
    Route("/v1/webpush-subscriptions", delete_own, methods=["DELETE"]),
    Route("/v1/users/{user_id}/webpush-subscriptions", put_users, methods=["PUT"]),
    Route("/v1/users/{user_id}/webpush-subscriptions", delete_users, methods=["DELETE"]),
]
