"""Web Push subscriptions over real HTTP: the public VAPID key, a signed-in browser's own
registration, a service's for any user, and what is refused (nothing written)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service import webpush
from tests.notify_api import Conn, assert_error, auth, new_key, running_api
from tests.push_service import PushService, serving_push_service
from tests.support import VAPID_PUBLIC_KEY, bearer, client_token, notify_data

OWN = "/v1/webpush-subscriptions"


def of(user: str) -> str:
    return f"/v1/users/{user}/webpush-subscriptions"


@pytest.fixture
async def push() -> AsyncIterator[PushService]:
    async with serving_push_service() as service:
        yield service


@pytest.fixture
def key(db_url: str) -> dict[str, str]:
    return auth(new_key(db_url, "accounts"))


async def stored(db: Conn) -> list[tuple[str, str, str, str]]:
    cur = await db.execute(
        "SELECT user_id, endpoint, p256dh, auth FROM webpush_subscriptions ORDER BY user_id, 2"
    )
    return list(await cur.fetchall())


async def test_the_public_key_is_served_to_anyone(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/webpush-key")
    assert response.status_code == 200
    assert response.json() == {"application_server_key": VAPID_PUBLIC_KEY}
    assert len(webpush.b64url_decode(VAPID_PUBLIC_KEY)) == 65


async def test_a_signed_in_browser_registers_itself_then_forgets_itself(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, push: PushService
) -> None:
    assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
    anna = bearer(client_token("anna"))
    subscription = push.subscribe("anna-laptop") | {"expirationTime": 1767225600000}
    response = await api.put(OWN, json=subscription, headers=anna)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["endpoint"] == subscription["endpoint"]
    assert body["expiration_time"] == "2026-01-01T00:00:00Z"
    keys = subscription["keys"]
    assert await stored(db) == [("anna", subscription["endpoint"], keys["p256dh"], keys["auth"])]

    # Again, with new keys (the browser renewed them): the same row, replaced.
    renewed = push.subscribe("anna-laptop")
    response = await api.put(OWN, json=renewed, headers=anna)
    assert response.status_code == 200, response.text
    assert response.json()["expiration_time"] is None
    new = renewed["keys"]
    assert await stored(db) == [("anna", renewed["endpoint"], new["p256dh"], new["auth"])]

    user = (await api.get("/v1/users/anna", headers=key)).json()
    assert [s["endpoint"] for s in user["webpush_subscriptions"]] == [renewed["endpoint"]]
    assert "keys" not in user["webpush_subscriptions"][0]

    endpoint = {"endpoint": renewed["endpoint"]}
    for _ in range(2):  # a repeat is a no-op
        response = await api.request("DELETE", OWN, json=endpoint, headers=anna)
        assert response.status_code == 204, response.text
    assert await stored(db) == []


async def test_a_service_registers_any_user_and_an_endpoint_moves_to_the_newest_user(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, push: PushService
) -> None:
    for user in ("anna", "ben"):
        assert (await api.put(f"/v1/users/{user}", json={}, headers=key)).status_code == 201
    shared = push.subscribe("family-tablet")
    assert (await api.put(of("anna"), json=shared, headers=key)).status_code == 201
    # Ben signs in on the same browser: the subscription is his now (201: new to him).
    assert (await api.put(of("ben"), json=shared, headers=key)).status_code == 201
    assert [(u, e) for u, e, _, _ in await stored(db)] == [("ben", shared["endpoint"])]
    # Anna forgetting it changes nothing: it is not hers any more.
    response = await api.request(
        "DELETE", of("anna"), json={"endpoint": shared["endpoint"]}, headers=key
    )
    assert response.status_code == 204
    assert len(await stored(db)) == 1

    # Erasing Ben erases his subscriptions.
    assert (await api.delete("/v1/users/ben", headers=key)).status_code == 204
    assert await stored(db) == []


async def test_a_user_keeps_the_newest_twenty(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, push: PushService
) -> None:
    assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
    made = [push.subscribe(f"browser-{n:02}") for n in range(22)]
    for subscription in made:
        assert (await api.put(of("anna"), json=subscription, headers=key)).status_code == 201
    kept = sorted(e for _, e, _, _ in await stored(db))
    assert kept == sorted(s["endpoint"] for s in made[2:])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_bad_subscriptions_are_refused_with_their_code_and_nothing_is_written(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, push: PushService
) -> None:
    assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
    good = push.subscribe("anna-laptop")
    p256dh, secret = good["keys"]["p256dh"], good["keys"]["auth"]
    point = webpush.b64url_decode(p256dh)
    not_on_curve = point[:-1] + bytes([point[-1] ^ 1])
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("plain http elsewhere", {"endpoint": "http://fcm.googleapis.com/fcm/send/x"}, "invalid"),
        ("no known push service", {"endpoint": "https://evil.example/push/x"}, "invalid"),
        ("a look-alike host", {"endpoint": "https://fcm.googleapis.com.evil.example/x"}, "invalid"),
        ("credentials", {"endpoint": "https://u:p@fcm.googleapis.com/fcm/send/x"}, "invalid"),
        ("not an URL", {"endpoint": "fcm.googleapis.com/x"}, "invalid"),
        ("a short key", {"keys": {"p256dh": p256dh[:-4], "auth": secret}}, "invalid"),
        ("off the curve", {"keys": {"p256dh": _b64(not_on_curve), "auth": secret}}, "invalid"),
        (
            "a compressed point",
            {"keys": {"p256dh": _b64(b"\x02" + point[1:33]), "auth": secret}},
            "invalid",
        ),
        ("auth of 15 bytes", {"keys": {"p256dh": p256dh, "auth": _b64(bytes(15))}}, "invalid"),
        ("standard base64", {"keys": {"p256dh": p256dh, "auth": "ab+/cd" + secret[6:]}}, "invalid"),
        ("no keys", {"keys": None}, "invalid"),
        ("an unknown field", {"extra": 1}, "body"),
        ("a negative expiry", {"expirationTime": -1}, "body"),
    ]
    for what, change, code in cases:
        body = {k: v for k, v in (good | change).items() if v is not None}
        response = await api.put(of("anna"), json=body, headers=key)
        expected = "invalid_subscription" if code == "invalid" else "invalid_body"
        assert response.status_code == 400, what
        assert_error(response, 400, expected)
    assert await stored(db) == []

    # Https at a push service is what a browser sends: accepted.
    fcm = good | {"endpoint": "https://fcm.googleapis.com/fcm/send/abc:def"}
    assert (await api.put(of("anna"), json=fcm, headers=key)).status_code == 201


async def test_who_may_register_and_for_whom(
    api: httpx.AsyncClient, db_url: str, db: Conn, push: PushService
) -> None:
    writer = auth(new_key(db_url, "accounts"))
    reader = auth(new_key(db_url, "reader", ("users:read",)))
    subscription = push.subscribe("anna-laptop")
    # No such user (yet): nothing is written.
    assert_error(await api.put(of("anna"), json=subscription, headers=writer), 404, "unknown_user")
    assert_error(
        await api.put(OWN, json=subscription, headers=bearer(client_token("anna"))),
        404,
        "unknown_user",
    )
    assert (await api.put("/v1/users/anna", json={}, headers=writer)).status_code == 201
    assert_error(
        await api.put(of("anna"), json=subscription, headers=reader), 403, "insufficient_scope"
    )
    # A browser registers itself with a user's token, not with a service's key.
    assert_error(
        await api.put(OWN, json=subscription, headers=writer), 403, "client_identity_required"
    )
    assert_error(await api.put(OWN, json=subscription), 401, "unauthenticated")
    assert await stored(db) == []


async def test_without_webpush_configured_the_routes_say_so(db_url: str, push: PushService) -> None:
    data = notify_data()
    del data["notify"]["webpush"]
    async with running_api(db_url, **data) as api:
        assert_error(await api.get("/v1/webpush-key"), 404, "webpush_not_configured")
        key = auth(new_key(db_url))
        assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
        response = await api.put(of("anna"), json=push.subscribe("x"), headers=key)
        assert_error(response, 404, "webpush_not_configured")
