"""Preferences over real HTTP: the client's own (/v1/preferences) and a service's
(/v1/users/{id}/preferences), and what the fan-out then does with them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.notify_api import (
    EPISODE,
    RECEIPT,
    Conn,
    assert_error,
    auth,
    counts,
    new_key,
)
from tests.support import bearer, client_token, driver_token


def anna() -> dict[str, str]:
    # Made per use: a token made at import would expire in a long run of the suite.
    return bearer(client_token("anna"))


CHANNELS = ("email", "inbox", "sms", "push")


@pytest.fixture
async def key(db_url: str, api: httpx.AsyncClient) -> dict[str, str]:
    """A producer key; anna exists, with every contact."""
    headers = auth(new_key(db_url, "content"))
    user = {
        "email": "anna@example.com",
        "phone": "+4915112345678",
        "devices": [{"token": "tok", "platform": "android"}],
    }
    assert (await api.put("/v1/users/anna", json=user, headers=headers)).status_code == 201
    return headers


def switches(**on: bool) -> dict[str, bool]:
    return dict.fromkeys(CHANNELS, True) | on


DEFAULT_SWITCHES = {
    "content": switches(sms=False),
    "social": switches(email=False),
    "account": switches(),
    "billing": switches(),
}
DEFAULTS: dict[str, Any] = {
    "muted": False,
    "categories": DEFAULT_SWITCHES,
    "quiet_hours": {},
    "transactional": ["account", "billing"],
}


async def test_effective_defaults_then_the_users_own(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    response = await api.get("/v1/preferences", headers=anna())
    assert response.status_code == 200, response.text
    assert response.json() == DEFAULTS

    mine = {
        "categories": {"content": {"email": False, "sms": True}, "billing": {"email": True}},
        "quiet_hours": {"push": {"start": "22:00", "end": "07:30"}},
    }
    response = await api.put("/v1/preferences", json=mine, headers=anna())
    assert response.status_code == 200, response.text
    expected = DEFAULTS | {
        "categories": DEFAULT_SWITCHES | {"content": switches(email=False)},
        "quiet_hours": {"push": {"start": "22:00", "end": "07:30"}},
    }
    assert response.json() == expected
    assert (await api.get("/v1/preferences", headers=anna())).json() == expected
    # The service sees the same, through the user's id.
    response = await api.get("/v1/users/anna/preferences", headers=key)
    assert response.json() == expected
    cur = await db.execute("SELECT muted, channels, quiet_hours FROM preferences")
    assert await cur.fetchall() == [(False, mine["categories"], mine["quiet_hours"])]

    # PUT replaces: what is left out goes back to its default.
    response = await api.put("/v1/preferences", json={"muted": True}, headers=anna())
    assert response.json() == DEFAULTS | {"muted": True}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"categories": {"billing": {"email": False}}}, "transactional_category"),
        ({"categories": {"account": {"push": False}}}, "transactional_category"),
        ({"categories": {"gossip": {"email": False}}}, "unknown_category"),
        ({"categories": {"content": {"pigeon": False}}}, "unknown_channel"),
        ({"categories": {"content": {"email": "no"}}}, "invalid_body"),
        ({"quiet_hours": {"pigeon": {"start": "22:00", "end": "07:00"}}}, "unknown_channel"),
        ({"quiet_hours": {"push": {"start": "24:00", "end": "07:00"}}}, "invalid_quiet_hours"),
        ({"quiet_hours": {"push": {"start": "7:00", "end": "08:00"}}}, "invalid_quiet_hours"),
        ({"quiet_hours": {"push": {"start": "08:00", "end": "08:00"}}}, "invalid_quiet_hours"),
        ({"quiet_hours": {"push": {"start": "08:00"}}}, "invalid_quiet_hours"),
        ({"quiet_hours": {"push": "22-07"}}, "invalid_quiet_hours"),
        ({"muted": "yes"}, "invalid_body"),
        ({"mute": True}, "invalid_body"),
    ],
)
async def test_bad_preferences_are_refused_and_change_nothing(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, body: dict[str, Any], code: str
) -> None:
    await api.put("/v1/preferences", json={"muted": True}, headers=anna())
    before = await counts(db)
    cur = await db.execute("SELECT muted, channels, quiet_hours, updated_at FROM preferences")
    stored = await cur.fetchall()
    for path, headers in (("/v1/preferences", anna()), ("/v1/users/anna/preferences", key)):
        assert_error(await api.put(path, json=body, headers=headers), 400, code)
    assert await counts(db) == before
    cur = await db.execute("SELECT muted, channels, quiet_hours, updated_at FROM preferences")
    assert await cur.fetchall() == stored


async def test_who_may_read_and_write_them(
    api: httpx.AsyncClient, db_url: str, key: dict[str, str], db: Conn
) -> None:
    assert_error(await api.get("/v1/preferences"), 401, "unauthenticated")
    driver = bearer(driver_token())
    assert_error(await api.get("/v1/preferences", headers=driver), 403, "client_identity_required")
    stranger = bearer(client_token("nobody"))
    assert_error(await api.get("/v1/preferences", headers=stranger), 404, "unknown_user")
    response = await api.put("/v1/preferences", json={"muted": True}, headers=stranger)
    assert_error(response, 404, "unknown_user")
    response = await api.put("/v1/users/nobody/preferences", json={}, headers=key)
    assert_error(response, 404, "unknown_user")
    assert_error(await api.get("/v1/users/nobody/preferences", headers=key), 404, "unknown_user")

    reader = auth(new_key(db_url, "crm", ("users:read",)))
    assert (await api.get("/v1/users/anna/preferences", headers=reader)).status_code == 200
    response = await api.put("/v1/users/anna/preferences", json={"muted": True}, headers=reader)
    assert_error(response, 403, "insufficient_scope")
    events_only = auth(new_key(db_url, "crm", ("events:write",)))
    response = await api.get("/v1/users/anna/preferences", headers=events_only)
    assert_error(response, 403, "insufficient_scope")
    assert (await counts(db))["preferences"] == 0


async def _post(api: httpx.AsyncClient, key: dict[str, str], type_: str, data: Any) -> None:
    body = {
        "type": type_,
        "idempotency_key": f"{type_}-{len(str(data))}",
        "recipients": {"user_ids": ["anna"]},
        "data": data,
    }
    response = await api.post("/v1/events", json=body, headers=key)
    assert response.status_code == 202, response.text


async def _fanned_out(db: Conn, type_: str) -> tuple[list[str], dict[str, str] | None]:
    cur = await db.execute(
        "SELECT n.suppressed, ARRAY(SELECT o.consumer FROM outbox o"
        " WHERE o.notification_id = n.id ORDER BY 1) FROM notifications n WHERE n.type = %s",
        (type_,),
    )
    row = await cur.fetchone()
    assert row is not None
    return list(row[1]), row[0]


async def test_a_switched_off_channel_gets_nothing(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    body = {"categories": {"content": {"push": False}}}
    assert (await api.put("/v1/preferences", json=body, headers=anna())).status_code == 200
    await _post(api, key, "new_episode", EPISODE)
    assert await _fanned_out(db, "new_episode") == (["email", "inbox"], {"push": "preference"})


async def test_muting_spares_transactional_categories(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    response = await api.put("/v1/users/anna/preferences", json={"muted": True}, headers=key)
    assert response.status_code == 200 and response.json()["muted"] is True
    await _post(api, key, "new_episode", EPISODE)
    await _post(api, key, "payment_receipt", RECEIPT)
    assert await _fanned_out(db, "new_episode") == (
        [],
        {"push": "muted", "inbox": "muted", "email": "muted"},
    )
    assert await _fanned_out(db, "payment_receipt") == (["email", "inbox", "push", "sms"], None)
