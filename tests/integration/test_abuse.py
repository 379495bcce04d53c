"""Abuse of the public API over real HTTP: bad tokens, spoofed identity headers, one user
reaching for another's data, keys without the scope or guessed, oversize and nested
bodies, hostile strings. Each is a clear JSON error that changes nothing, or is stored and
echoed as plain data. (The admin panel and unsubscribe links: test_abuse_links_admin.py.)"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from service.apikeys import MAX_KEY_FAILURES
from tests.notify_api import EPISODE, Conn, assert_error, auth, counts, new_key, running_api
from tests.support import (
    AUDIENCE,
    ISSUER,
    JWT_SECRET,
    bearer,
    client_token,
    config_data,
    seen_counts,
    token,
)

pytestmark = pytest.mark.timeout(120)
SQLISH = "'); DROP TABLE outbox;--"


async def post_seen(api: httpx.AsyncClient, body: Any, headers: dict[str, str]) -> httpx.Response:
    return await api.post("/v1/seen", json=body, headers=headers)


async def deliver_inbox(db: Conn) -> None:
    # What the dispatcher's inbox transport would do.
    await db.execute(
        "UPDATE outbox SET status = 'delivered', delivered_at = now() WHERE consumer = 'inbox'"
    )


# -- tokens --------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


BAD_TOKENS = {
    "forged": lambda: token({"kind": "client", "sub": "u"}, secret="f" * 40),
    "expired": lambda: token({"kind": "client", "sub": "u"}, ttl=-3600),
    "alg none": lambda: jwt.encode(
        {"aud": AUDIENCE, "iss": ISSUER, "exp": _now() + 60, "kind": "client", "sub": "u"},
        "",
        algorithm="none",
    ),
    "wrong audience": lambda: token({"kind": "client", "sub": "u", "aud": "another-service"}),
    "wrong issuer": lambda: token({"kind": "client", "sub": "u", "iss": "evil.example"}),
    "exp 10**400": lambda: jwt.encode(
        {"aud": AUDIENCE, "iss": ISSUER, "exp": 10**400, "kind": "client", "sub": "u"},
        JWT_SECRET,
    ),
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS)
async def test_bad_tokens_are_401_everywhere_and_write_nothing(
    api: httpx.AsyncClient, db: Conn, make: Any
) -> None:
    headers = bearer(make())
    response = await post_seen(api, {"tag": "promotions", "id": "p-1"}, headers)
    assert_error(response, 401, "invalid_token")
    assert_error(await api.get("/v1/inbox", headers=headers), 401, "invalid_token")
    assert_error(await api.get("/v1/preferences", headers=headers), 401, "invalid_token")
    assert await seen_counts(db) == (0, 0, 0)


async def test_gateway_headers_from_an_untrusted_peer_are_ignored(db_url: str, db: Conn) -> None:
    identity = config_data(db_url)["identity"]
    identity["gateway"] = {"enabled": True, "trusted_peers": ["10.0.0.0/8"]}
    spoofed = {"X-YaTaxi-UserId": "victim", "X-Yandex-UID": "1"}
    async with running_api(db_url, identity=identity) as api:
        # The test client is 127.0.0.1, outside trusted_peers: it stays anonymous.
        response = await post_seen(api, {"tag": "promotions", "id": "p-1"}, spoofed)
        assert_error(response, 401, "unauthenticated")
        assert_error(await api.get("/v1/inbox", headers=spoofed), 401, "unauthenticated")
        # Nor does X-Forwarded-For make it a trusted peer (uvicorn runs without proxy headers).
        forwarded = spoofed | {"X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3"}
        assert_error(await api.get("/v1/inbox", headers=forwarded), 401, "unauthenticated")
    assert await seen_counts(db) == (0, 0, 0)


# -- one user and another's data -----------------------------------------------------------


async def test_a_user_sees_and_changes_only_their_own_inbox_and_preferences(
    db_url: str, api: httpx.AsyncClient, db: Conn
) -> None:
    key = auth(new_key(db_url))
    users = [{"id": "alice"}, {"id": "bob"}]
    assert (await api.put("/v1/users", json={"users": users}, headers=key)).status_code == 200
    event = {
        "type": "new_episode",
        "idempotency_key": "for-bob",
        "recipients": {"user_ids": ["bob"]},
        "data": EPISODE,
    }
    assert (await api.post("/v1/events", json=event, headers=key)).status_code == 202
    await deliver_inbox(db)
    alice = bearer(client_token("alice"))
    bob = bearer(client_token("bob"))
    assert len((await api.get("/v1/inbox", headers=bob)).json()["items"]) == 1

    assert (await api.get("/v1/inbox", headers=alice)).json()["items"] == []
    # Naming the other user anywhere is refused, never followed.
    for query in ({"user_id": "bob"}, {"user": "bob"}, {"sub": "bob"}):
        response = await api.get("/v1/inbox", params=query, headers=alice)
        assert_error(response, 400, "invalid_query")
    # A client token is not a key for the producers' per-user endpoints.
    for path in ("/v1/users/bob", "/v1/users/bob/preferences"):
        assert_error(await api.get(path, headers=alice), 401, "service_key_required")
    # A cursor is not a way into someone else's inbox: it only pages the caller's own.
    bob_page = (await api.get("/v1/inbox", params={"limit": 1}, headers=bob)).json()
    cursor = bob_page["next_cursor"] or "MjAzMC0wMS0wMVQwMDowMDowMCswMDowMHxmZmZm"
    response = await api.get("/v1/inbox", params={"cursor": cursor}, headers=alice)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json()["items"] == []

    before = (await api.get("/v1/preferences", headers=bob)).json()
    body = {"muted": True}
    response = await api.put("/v1/preferences", json=body, headers=alice)
    assert response.status_code == 200
    assert (await api.get("/v1/preferences", headers=bob)).json() == before
    # A body naming a user is refused: the user is the token's subject only.
    response = await api.put(
        "/v1/preferences", json={"muted": True, "user_id": "bob"}, headers=alice
    )
    assert_error(response, 400, "invalid_body")


# -- service keys --------------------------------------------------------------------------


async def test_a_key_without_the_scope_is_403_and_writes_nothing(
    db_url: str, api: httpx.AsyncClient, db: Conn
) -> None:
    reader = auth(new_key(db_url, "reader", ("users:read",)))
    before = await counts(db)
    response = await api.put("/v1/users/u-1", json={}, headers=reader)
    assert_error(response, 403, "insufficient_scope")
    event = {"type": "new_episode", "idempotency_key": "k", "recipients": {"all": True}}
    assert_error(
        await api.post("/v1/events", json=event, headers=reader), 403, "insufficient_scope"
    )
    assert await counts(db) == before


async def test_guessing_api_keys_is_rate_limited_per_address(
    db_url: str, api: httpx.AsyncClient, db: Conn
) -> None:
    good = auth(new_key(db_url))
    # Verified once, so remembered: a key in use keeps working through a lockout.
    assert (await api.get("/v1/users/nobody", headers=good)).status_code == 404
    unused = auth(new_key(db_url, "other"))
    guess = auth("mn_0123abcd_" + "A" * 43)
    for _ in range(MAX_KEY_FAILURES):
        assert_error(await api.get("/v1/users/x", headers=guess), 401, "invalid_api_key")
    locked = await api.get("/v1/users/x", headers=guess)
    body = assert_error(locked, 429, "too_many_attempts")
    assert body["message"]
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    # While locked, this address cannot try any key it has not used before...
    assert_error(await api.get("/v1/users/x", headers=unused), 429, "too_many_attempts")
    # ...but the key already verified still works.
    assert (await api.get("/v1/users/nobody", headers=good)).status_code == 404


# -- oversize and nested bodies ------------------------------------------------------------


async def test_oversize_bodies_and_batches_are_refused(api: httpx.AsyncClient, db: Conn) -> None:
    headers = bearer(client_token())
    big = {"tag": "promotions", "id": "x" * 10_000}
    assert_error(await post_seen(api, big, headers), 413, "payload_too_large")
    batch = {"items": [{"tag": "promotions", "id": str(n)} for n in range(101)]}
    assert_error(await post_seen(api, batch, headers), 400, "batch_too_large")
    longer = {"items": [{"tag": "promotions", "id": f"id-{n:04}"} for n in range(300)]}
    assert_error(await post_seen(api, longer, headers), 413, "payload_too_large")
    assert await seen_counts(db) == (0, 0, 0)


async def test_a_batch_over_max_batch_is_batch_too_large(db_url: str, db: Conn) -> None:
    async with running_api(
        db_url, api={"max_body_bytes": 65536, "max_batch": 3, "retry_after_s": 3}
    ) as api:
        batch = {"items": [{"tag": "promotions", "id": str(n)} for n in range(4)]}
        response = await post_seen(api, batch, bearer(client_token()))
        assert_error(response, 400, "batch_too_large")
    assert await seen_counts(db) == (0, 0, 0)


@pytest.mark.parametrize("depth", [200, 1500, 3000])
async def test_deeply_nested_json_is_refused_fast(
    db_url: str, api: httpx.AsyncClient, db: Conn, depth: int
) -> None:
    key = auth(new_key(db_url))
    nested = "[" * depth + "]" * depth
    body = (
        '{"type": "new_episode", "idempotency_key": "deep", "recipients": {"all": true},'
        f' "data": {{"series": {nested}}}}}'
    )
    started = time.monotonic()
    response = await api.post(
        "/v1/events", content=body, headers=key | {"Content-Type": "application/json"}
    )
    assert time.monotonic() - started < 2
    # Shallow enough to parse: refused for the data it lacks; deeper: as malformed.
    assert_error(response, 400, "missing_data" if depth < 1000 else "malformed_json")
    nested_seen = '{"tag": "promotions", "id": ' + nested + "}"
    response = await api.post(
        "/v1/seen",
        content=nested_seen,
        headers=bearer(client_token()) | {"Content-Type": "application/json"},
    )
    assert response.status_code in (400, 413)
    assert (await counts(db))["events"] == 0


# -- hostile strings -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\u0085b", "\u009b31m", "x\u202ey", "x\x00", "\u2028"])
async def test_unsafe_characters_are_refused_in_every_identifier(
    db_url: str, api: httpx.AsyncClient, db: Conn, bad: str
) -> None:
    headers = bearer(client_token())
    assert_error(
        await post_seen(api, {"tag": "promotions", "id": bad}, headers), 400, "invalid_body"
    )
    batch = {"items": [{"tag": "promotions", "id": "ok"}, {"tag": "promotions", "id": bad}]}
    assert_error(await post_seen(api, batch, headers), 400, "invalid_body")
    key = auth(new_key(db_url))
    before = await counts(db)
    user = "/v1/users/" + quote(bad, safe="")
    assert_error(await api.put(user, json={}, headers=key), 400, "invalid_user_id")
    assert (await api.put("/v1/users/u-1", json={}, headers=key)).status_code == 201
    after_user = await counts(db)
    topic = "/v1/users/u-1/topics/" + quote(bad, safe="")
    assert_error(await api.put(topic, headers=key), 400, "invalid_topic")
    device = {"devices": [{"token": bad, "platform": "ios"}]}
    assert_error(await api.put("/v1/users/u-1", json=device, headers=key), 400, "invalid_body")
    event = {
        "type": "new_episode",
        "idempotency_key": bad,
        "recipients": {"user_ids": ["u-1"]},
        "data": EPISODE,
    }
    response = await api.post("/v1/events", json=event, headers=key)
    assert_error(response, 400, "invalid_idempotency_key")
    recipients = {"topic": bad}
    response = await api.post(
        "/v1/events", json=event | {"idempotency_key": "k", "recipients": recipients}, headers=key
    )
    assert_error(response, 400, "invalid_recipients")
    assert await seen_counts(db) == (0, 0, after_user["procrastinate_jobs"])
    assert await counts(db) == after_user
    assert before["users"] + 1 == after_user["users"]


async def test_idempotency_key_header_must_be_visible_ascii(
    api: httpx.AsyncClient, db: Conn
) -> None:
    for bad in (b"k\x85", b"\xc3\xa9t\xc3\xa9"):
        response = await api.post(
            "/v1/seen",
            content=b'{"tag": "banners", "id": "x"}',
            headers=[(b"content-type", b"application/json"), (b"idempotency-key", bad)],
        )
        assert_error(response, 400, "invalid_body")
    assert await seen_counts(db) == (0, 0, 0)


async def test_sql_looking_strings_are_stored_and_echoed_as_data(
    db_url: str, api: httpx.AsyncClient, db: Conn
) -> None:
    response = await post_seen(api, {"tag": "promotions", "id": SQLISH}, bearer(client_token()))
    assert response.json() == {"tag": "promotions", "id": SQLISH, "status": "recorded"}
    cur = await db.execute("SELECT item_id FROM seen_marks")
    assert await cur.fetchall() == [(SQLISH,)]
    key = auth(new_key(db_url))
    user = "/v1/users/" + quote(SQLISH, safe="")
    response = await api.put(user, json={"locale": "en"}, headers=key)
    assert response.status_code == 201, response.text
    assert response.json()["id"] == SQLISH
    assert (
        await api.put(f"{user}/topics/{SQLISH.replace('/', '')}", headers=key)
    ).status_code == 204
    assert (await api.get(user, headers=key)).json()["topics"] == [SQLISH.replace("/", "")]
    cur = await db.execute("SELECT count(*) FROM outbox")
    assert (await cur.fetchone()) is not None  # the table is still there


async def test_template_code_in_event_data_is_rendered_as_text(
    db_url: str, api: httpx.AsyncClient, db: Conn
) -> None:
    key = auth(new_key(db_url))
    assert (await api.put("/v1/users/eve", json={}, headers=key)).status_code == 201
    hostile = {
        "series": "{{ 7*7 }}",
        "episode": "{% for x in range(10**9) %}x{% endfor %}",
        "title": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "url": "<script>alert(1)</script>",
    }
    event = {
        "type": "new_episode",
        "idempotency_key": "inject",
        "recipients": {"user_ids": ["eve"]},
        "data": hostile,
    }
    assert (await api.post("/v1/events", json=event, headers=key)).status_code == 202
    await deliver_inbox(db)
    items = (await api.get("/v1/inbox", headers=bearer(client_token("eve")))).json()["items"]
    assert len(items) == 1
    assert items[0]["title"] == "New episode of {{ 7*7 }}"
    assert "{% for x in range(10**9) %}x{% endfor %}" in items[0]["body"]
    assert hostile["title"] in items[0]["body"]
    assert items[0]["link"] == hostile["url"]
