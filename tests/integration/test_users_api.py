"""Recipients over real HTTP: PUT/GET/DELETE /v1/users/{id}, the bulk import, topics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.notify_api import (
    EPISODE,
    Conn,
    assert_error,
    auth,
    counts,
    new_key,
)
from tests.support import bearer, client_token


@pytest.fixture
def key(db_url: str) -> dict[str, str]:
    return auth(new_key(db_url, "accounts"))


ANNA = {
    "email": "anna@example.com",
    "phone": "+4915112345678",
    "locale": "de-DE",
    "timezone": "Europe/Berlin",
    "devices": [{"token": "apns-1", "platform": "ios"}, {"token": "fcm-1", "platform": "android"}],
}


async def devices(db: Conn, user_id: str) -> list[tuple[str, str]]:
    cur = await db.execute(
        "SELECT token, platform FROM push_devices WHERE user_id = %s ORDER BY token", (user_id,)
    )
    return [(t, p) for t, p in await cur.fetchall()]


async def test_put_creates_then_replaces_the_whole_user(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    response = await api.put("/v1/users/anna", json=ANNA, headers=key)
    assert response.status_code == 201, response.text
    body = response.json()
    assert {k: body[k] for k in ANNA if k != "devices"} == {
        k: v for k, v in ANNA.items() if k != "devices"
    }
    assert body["id"] == "anna" and body["topics"] == []
    assert sorted(body["devices"], key=lambda d: d["token"]) == ANNA["devices"]
    assert await devices(db, "anna") == [("apns-1", "ios"), ("fcm-1", "android")]

    got = await api.get("/v1/users/anna", headers=key)
    assert got.status_code == 200 and got.json() == body

    # A replace: the phone left out is cleared, devices become exactly the new list.
    replacement = {"email": "anna@new.example", "devices": [{"token": "fcm-1", "platform": "web"}]}
    response = await api.put("/v1/users/anna", json=replacement, headers=key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["email"], body["phone"], body["locale"], body["timezone"]) == (
        "anna@new.example",
        None,
        None,
        None,
    )
    assert body["devices"] == [{"token": "fcm-1", "platform": "web"}]
    assert await devices(db, "anna") == [("fcm-1", "web")]
    cur = await db.execute("SELECT email, phone, timezone FROM users WHERE id = 'anna'")
    assert await cur.fetchone() == ("anna@new.example", None, None)


async def test_bulk_import_of_1000_users_in_one_request(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    await api.put("/v1/users/u0007", json={"email": "old@example.com"}, headers=key)
    users: list[dict[str, Any]] = [
        {
            "id": f"u{n:04}",
            "email": f"u{n}@example.com",
            "devices": [{"token": f"tok-{n}", "platform": "android"}] if n % 2 else [],
        }
        for n in range(1000)
    ]
    response = await api.put("/v1/users", json={"users": users}, headers=key)
    assert response.status_code == 200, response.text
    assert response.json() == {"users": 1000, "created": 999}
    cur = await db.execute(
        "SELECT count(*), count(*) FILTER (WHERE email = 'u7@example.com') FROM users"
    )
    assert await cur.fetchone() == (1000, 1)
    assert (await counts(db))["push_devices"] == 500

    # Importing again replaces: nobody is created, devices follow the new lists.
    for user in users:
        user["devices"] = []
    response = await api.put("/v1/users", json={"users": users}, headers=key)
    assert response.json() == {"users": 1000, "created": 0}
    assert (await counts(db))["push_devices"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"users": [{"id": "a"}, {"id": "a"}]}, "listed twice"),
        ({"users": [{"id": f"u{n}"} for n in range(1001)]}, "length <= 1000"),
        ({"users": []}, "length >= 1"),
        ({"users": [{"id": "a", "timezone": "Mars/Olympus"}]}, "time zone"),
        ({"users": [{"id": "a/b"}]}, "$.users[0].id"),
        ({"people": []}, "unknown field"),
    ],
)
async def test_bulk_import_refusals_write_nothing(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, body: dict[str, Any], fragment: str
) -> None:
    before = await counts(db)
    response = await api.put("/v1/users", json=body, headers=key)
    assert fragment in assert_error(response, 400, "invalid_body")["message"]
    assert await counts(db) == before


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"email": "not-an-address"}, "$.email"),
        ({"email": "a@b.c\n"}, "$.email"),
        ({"phone": "0151 1234567"}, "$.phone"),
        ({"phone": "+0123"}, "$.phone"),
        ({"locale": "German"}, "$.locale"),
        ({"timezone": "Mars/Olympus"}, "unknown IANA time zone"),
        ({"timezone": "../../etc/passwd"}, "$.timezone"),
        ({"timezone": "localtime"}, "unknown IANA time zone"),
        ({"devices": [{"token": "t", "platform": "symbian"}]}, "$.devices[0].platform"),
        ({"devices": [{"token": "t", "platform": "ios"}] * 2}, "listed twice"),
        ({"devices": [{"token": f"t{n}", "platform": "ios"} for n in range(21)]}, "<= 20"),
        ({"id": "other"}, "unknown field `id`"),
    ],
)
async def test_bad_users_are_refused_and_change_nothing(
    api: httpx.AsyncClient,
    key: dict[str, str],
    db: Conn,
    change: dict[str, Any],
    fragment: str,
) -> None:
    await api.put("/v1/users/anna", json=ANNA, headers=key)
    before = await counts(db)
    response = await api.put("/v1/users/anna", json=ANNA | change, headers=key)
    assert fragment in assert_error(response, 400, "invalid_body")["message"]
    assert await counts(db) == before
    assert (await api.get("/v1/users/anna", headers=key)).json()["email"] == ANNA["email"]


async def test_malformed_bodies_and_ids(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    response = await api.put(
        "/v1/users/anna", content=b"{", headers=key | {"Content-Type": "application/json"}
    )
    assert_error(response, 400, "malformed_json")
    response = await api.put(
        "/v1/users/anna", content=json.dumps(ANNA), headers=key | {"Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")
    for bad in ("%00", "a%0Ab", "x" * 129):
        assert_error(await api.get(f"/v1/users/{bad}", headers=key), 400, "invalid_user_id")
        assert_error(
            await api.put(f"/v1/users/{bad}", json={}, headers=key), 400, "invalid_user_id"
        )
    assert_error(await api.get("/v1/users/nobody", headers=key), 404, "unknown_user")
    assert (await counts(db))["users"] == 0


async def test_delete_erases_the_user_and_keeps_anonymous_history(
    api: httpx.AsyncClient, db_url: str, db: Conn
) -> None:
    key = auth(new_key(db_url, "accounts"))
    events_key = auth(new_key(db_url, "content", ("events:write",)))
    await api.put("/v1/users/anna", json=ANNA, headers=key)
    await api.put("/v1/users/anna/topics/series-1", headers=key)
    await api.put("/v1/users/anna/preferences", json={"muted": False}, headers=key)
    posted = await api.post(
        "/v1/events",
        json={
            "type": "new_episode",
            "idempotency_key": "ep-1",
            "recipients": {"user_ids": ["anna"]},
            "data": EPISODE,
        },
        headers=events_key,
    )
    assert posted.status_code == 202, posted.text

    response = await api.delete("/v1/users/anna", headers=key)
    assert response.status_code == 204
    assert_error(await api.get("/v1/users/anna", headers=key), 404, "unknown_user")
    after = await counts(db)
    assert (after["users"], after["push_devices"], after["user_topics"], after["preferences"]) == (
        0,
        0,
        0,
        0,
    )
    cur = await db.execute("SELECT user_id FROM notifications")
    assert await cur.fetchall() == [(None,)]
    cur = await db.execute("SELECT DISTINCT status, reason FROM outbox")
    assert await cur.fetchall() == [("suppressed", "erased")]
    # The event's status shows what happened.
    event = (await api.get(f"/v1/events/{posted.json()['id']}", headers=events_key)).json()
    assert event["channels"]["push"]["suppressed"]["erased"] == 1

    assert_error(await api.delete("/v1/users/anna", headers=key), 404, "unknown_user")


async def test_topics_join_and_leave(api: httpx.AsyncClient, key: dict[str, str], db: Conn) -> None:
    await api.put("/v1/users/anna", json={}, headers=key)
    for _ in range(2):  # a repeat is a no-op
        response = await api.put("/v1/users/anna/topics/series:123", headers=key)
        assert response.status_code == 204, response.text
    await api.put("/v1/users/anna/topics/a topic", headers=key)
    assert (await api.get("/v1/users/anna", headers=key)).json()["topics"] == [
        "a topic",
        "series:123",
    ]
    assert (await api.delete("/v1/users/anna/topics/series:123", headers=key)).status_code == 204
    assert (await api.delete("/v1/users/anna/topics/never-in", headers=key)).status_code == 204
    assert (await api.get("/v1/users/anna", headers=key)).json()["topics"] == ["a topic"]

    before = await counts(db)
    assert_error(await api.put("/v1/users/ghost/topics/t", headers=key), 404, "unknown_user")
    assert_error(await api.delete("/v1/users/ghost/topics/t", headers=key), 404, "unknown_user")
    assert_error(await api.put("/v1/users/anna/topics/%7F", headers=key), 400, "invalid_topic")
    assert await counts(db) == before


async def test_service_endpoints_need_the_right_key(
    api: httpx.AsyncClient, db_url: str, db: Conn
) -> None:
    reader = auth(new_key(db_url, "crm", ("users:read",)))
    writer = auth(new_key(db_url, "crm", ("users:write",)))
    assert (await api.put("/v1/users/anna", json={}, headers=writer)).status_code == 201
    assert (await api.get("/v1/users/anna", headers=reader)).status_code == 200

    body = assert_error(await api.get("/v1/users/anna", headers=writer), 403, "insufficient_scope")
    assert "users:read" in body["message"]
    before = await counts(db)
    for call in (
        api.put("/v1/users/anna", json={"email": "x@y.z"}, headers=reader),
        api.delete("/v1/users/anna", headers=reader),
        api.put("/v1/users", json={"users": [{"id": "b"}]}, headers=reader),
        api.put("/v1/users/anna/topics/t", headers=reader),
    ):
        assert_error(await call, 403, "insufficient_scope")
    response = await api.get("/v1/users/anna")
    assert_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(
        await api.get("/v1/users/anna", headers=bearer(client_token("anna"))),
        401,
        "service_key_required",
    )
    assert_error(
        await api.get("/v1/users/anna", headers=auth("mn_00000000_" + "A" * 43)),
        401,
        "invalid_api_key",
    )
    assert_error(
        await api.get("/v1/users/anna", headers={"Authorization": "Basic YTpi"}),
        401,
        "invalid_api_key",
    )
    assert await counts(db) == before
