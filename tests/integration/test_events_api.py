"""POST /v1/events, GET /v1/events/{id} and GET /v1/notifications/{id} over real HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from service.notify import catalog
from tests.notify_api import (
    EPISODE,
    RECEIPT,
    Conn,
    assert_error,
    auth,
    counts,
    new_key,
    running_api,
)
from tests.support import bearer, client_token


@pytest.fixture
def key(db_url: str) -> dict[str, str]:
    return auth(new_key(db_url, "content"))


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "new_episode",
        "idempotency_key": "episode-3",
        "recipients": {"user_ids": ["anna"]},
        "data": EPISODE,
    }
    return body | changes


async def add_users(api: httpx.AsyncClient, key: dict[str, str], *users: dict[str, Any]) -> None:
    response = await api.put("/v1/users", json={"users": list(users)}, headers=key)
    assert response.status_code == 200, response.text


def with_device(user_id: str, **fields: Any) -> dict[str, Any]:
    device = {"token": f"tok-{user_id}", "platform": "ios"}
    return {"id": user_id, "email": f"{user_id}@example.com", "devices": [device]} | fields


async def fetch(db: Conn, query: Any, *params: Any) -> list[tuple[Any, ...]]:
    cur = await db.execute(query, params or None)
    return await cur.fetchall()


# -- intake -----------------------------------------------------------------------------------


async def test_an_event_is_accepted_and_fanned_out(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    await add_users(api, key, with_device("anna"), {"id": "ben", "email": "ben@example.com"})
    response = await api.post(
        "/v1/events", json=event(recipients={"user_ids": ["anna", "ben", "ghost"]}), headers=key
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"id", "status", "created"}
    assert (body["status"], body["created"]) == ("done", True)
    assert response.headers["location"] == f"/v1/events/{body['id']}"

    rows = await fetch(
        db, "SELECT producer, idempotency_key, type, data, notified, no_recipient FROM events"
    )
    assert rows == [("content", "episode-3", "new_episode", EPISODE, 2, 1)]
    deliveries = await fetch(
        db,
        "SELECT n.user_id, o.consumer FROM outbox o JOIN notifications n"
        " ON n.id = o.notification_id ORDER BY 1, 2",
    )
    assert deliveries == [
        ("anna", "email"),
        ("anna", "inbox"),
        ("anna", "push"),
        ("ben", "email"),
        ("ben", "inbox"),
    ]


async def test_a_repeat_returns_the_first_event_and_writes_nothing(
    api: httpx.AsyncClient, db_url: str, key: dict[str, str], db: Conn
) -> None:
    await add_users(api, key, with_device("anna"))
    first = await api.post("/v1/events", json=event(), headers=key)
    assert first.status_code == 202
    before = await counts(db)
    # The key decides, whatever else the repeat says.
    again = await api.post("/v1/events", json=event(data=EPISODE | {"title": "Other"}), headers=key)
    assert again.status_code == 200, again.text
    assert again.json() == {"id": first.json()["id"], "status": "done", "created": False}
    assert await counts(db) == before

    # Idempotency keys are per producer: another producer's same key is its own event.
    other = await api.post("/v1/events", json=event(), headers=auth(new_key(db_url, "promo")))
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


async def test_inline_users_a_topic_and_a_later_send_at(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    inline = [{"id": "zed", "email": "zed@example.com", "timezone": "Asia/Tokyo"}]
    response = await api.post(
        "/v1/events", json=event(idempotency_key="a", recipients={"users": inline}), headers=key
    )
    assert response.status_code == 202, response.text
    assert await fetch(db, "SELECT id, email, timezone FROM users") == [
        ("zed", "zed@example.com", "Asia/Tokyo")
    ]
    await api.put("/v1/users/zed/topics/series-1", headers=key)

    response = await api.post(
        "/v1/events", json=event(idempotency_key="b", recipients={"topic": "series-1"}), headers=key
    )
    assert response.json()["status"] == "materializing"
    later = datetime.now(UTC) + timedelta(hours=2)
    response = await api.post(
        "/v1/events",
        json=event(idempotency_key="c", recipients={"all": True}, send_at=later.isoformat()),
        headers=key,
    )
    assert response.status_code == 202 and response.json()["status"] == "scheduled"
    rows = await fetch(
        db,
        "SELECT scheduled_at FROM procrastinate_jobs WHERE args->>'event_id' = %s",
        response.json()["id"],
    )
    assert abs((rows[0][0] - later).total_seconds()) < 1


async def test_template_code_in_data_is_stored_as_data(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    data = EPISODE | {"title": "{{ config }}{% for x in range(9**9) %}{% endfor %}"}
    response = await api.post("/v1/events", json=event(data=data), headers=key)
    assert response.status_code == 202, response.text
    assert await fetch(db, "SELECT data FROM events") == [(data,)]


BAD_EVENTS: list[tuple[dict[str, Any], int, str, str]] = [
    (event(type="nope"), 400, "unknown_event_type", "nope"),
    (event(type="Not A Type"), 400, "unknown_event_type", "$.type"),
    (event(data={"series": "Dark"}), 400, "missing_data", "episode, title, url"),
    (event(data=EPISODE | {"x": "y" * 16_400}), 413, "data_too_large", "at most 16384"),
    (event(data=["not", "an", "object"]), 400, "invalid_body", "$.data"),
    (event(recipients={}), 400, "invalid_recipients", "got none"),
    (event(recipients={"user_ids": ["a"], "all": True}), 400, "invalid_recipients", "exactly"),
    (event(recipients={"user_ids": []}), 400, "invalid_recipients", "length >= 1"),
    (event(recipients={"user_ids": ["a\u0000"]}), 400, "invalid_recipients", "user_ids[0]"),
    (event(recipients={"user_ids": ["a/b"]}), 400, "invalid_recipients", "user_ids[0]"),
    (
        event(recipients={"user_ids": [f"u{n}" for n in range(10_001)]}),
        400,
        "invalid_recipients",
        "at most 10000",
    ),
    (event(recipients={"all": False}), 400, "invalid_recipients", "only be true"),
    (event(recipients={"topic": ""}), 400, "invalid_recipients", "$.recipients.topic"),
    (event(recipients={"group": "x"}), 400, "invalid_recipients", "unknown field"),
    (
        event(recipients={"users": [{"id": "a", "email": "nope"}]}),
        400,
        "invalid_recipients",
        "users[0].email",
    ),
    (
        event(recipients={"users": [{"id": "a", "timezone": "Mars/Olympus"}]}),
        400,
        "invalid_recipients",
        "Mars/Olympus",
    ),
    (
        event(recipients={"users": [{"id": "a"}, {"id": "a"}]}),
        400,
        "invalid_recipients",
        "twice",
    ),
    (
        event(recipients={"users": [{"id": "a", "devices": []}]}),
        400,
        "invalid_recipients",
        "unknown field",
    ),
    (event(idempotency_key=""), 400, "invalid_idempotency_key", "length >= 1"),
    (event(idempotency_key="k" * 256), 400, "invalid_idempotency_key", "length <= 255"),
    (event(idempotency_key="a\nb"), 400, "invalid_idempotency_key", "idempotency_key"),
    (
        {k: v for k, v in event().items() if k != "idempotency_key"},
        400,
        "invalid_idempotency_key",
        "idempotency_key",
    ),
    (event(send_at="tomorrow"), 400, "invalid_send_at", "$.send_at"),
    (event(send_at="2030-01-01T10:00:00"), 400, "invalid_send_at", "timezone"),
    (event(send_at=1893456000), 400, "invalid_send_at", "$.send_at"),
    (event(priority="high"), 400, "invalid_body", "unknown field `priority`"),
]


@pytest.mark.parametrize(("body", "status", "code", "fragment"), BAD_EVENTS)
async def test_bad_events_are_refused_before_anything_is_written(
    api: httpx.AsyncClient,
    key: dict[str, str],
    db: Conn,
    body: dict[str, Any],
    status: int,
    code: str,
    fragment: str,
) -> None:
    await add_users(api, key, with_device("anna"))
    before = await counts(db)
    response = await api.post("/v1/events", json=body, headers=key)
    assert fragment in assert_error(response, status, code)["message"]
    assert await counts(db) == before


async def test_malformed_requests(api: httpx.AsyncClient, key: dict[str, str], db: Conn) -> None:
    json_type = {"Content-Type": "application/json"}
    response = await api.post("/v1/events", content=b'{"type": ', headers=key | json_type)
    assert_error(response, 400, "malformed_json")
    response = await api.post(
        "/v1/events", content=json.dumps(event()), headers=key | {"Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")
    huge = b'{"type": "new_episode", "data": {"x": "' + b"y" * 7_000_000 + b'"}}'
    response = await api.post("/v1/events", content=huge, headers=key | json_type)
    assert_error(response, 413, "payload_too_large")
    assert set((await counts(db)).values()) == {0}


async def test_a_type_the_database_no_longer_has_is_a_400(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    await add_users(api, key, with_device("anna"))
    # As if a newer deployment had removed the type from the catalog.
    await db.execute("UPDATE notify_event_types SET enabled = false WHERE name = 'new_episode'")
    before = await counts(db)
    response = await api.post("/v1/events", json=event(), headers=key)
    assert "Refused by the database" in assert_error(response, 400, "unknown_event_type")["message"]
    assert await counts(db) == before


async def test_until_the_catalog_is_synced_an_event_is_a_503(
    db_url: str, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database was down when the API started, so its event types were never mirrored
    into it: a valid event is a 503 to retry, not the database's 400 unknown_event_type,
    until the background sync gets through; then it is accepted."""
    real_sync = catalog.sync_catalog
    attempts: list[bool] = []
    database_down = True

    async def sync(conn: Any, config: Any, templates: Any) -> None:
        attempts.append(database_down)
        if database_down:
            raise psycopg.OperationalError("connection refused (as if the database were down)")
        await real_sync(conn, config, templates)

    monkeypatch.setattr(catalog, "sync_catalog", sync)
    key = auth(new_key(db_url, "content"))
    api_settings = {"max_body_bytes": 4096, "max_batch": 100, "retry_after_s": 1}
    async with running_api(db_url, api=api_settings) as api:
        assert attempts == [True]
        # What the database would answer: it has no event types yet.
        assert await fetch(db, "SELECT count(*) FROM notify_event_types") == [(0,)]
        response = await api.post("/v1/events", json=event(), headers=key)
        assert_error(response, 503, "database_unavailable")
        assert response.headers["retry-after"] == "1"
        # A body that can never succeed is still refused as such.
        response = await api.post("/v1/events", json=event(type="nope"), headers=key)
        assert_error(response, 400, "unknown_event_type")
        assert (await counts(db))["events"] == 0

        database_down = False
        for _ in range(100):
            response = await api.post("/v1/events", json=event(), headers=key)
            if response.status_code != 503:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 202, response.text
        assert attempts[-1] is False
        assert (await counts(db))["events"] == 1


async def test_the_events_scope_is_needed(api: httpx.AsyncClient, db_url: str, db: Conn) -> None:
    users_only = auth(new_key(db_url, "content", ("users:read", "users:write")))
    body = assert_error(
        await api.post("/v1/events", json=event(), headers=users_only), 403, "insufficient_scope"
    )
    assert "events:write" in body["message"]
    assert_error(
        await api.post("/v1/events", json=event(), headers=bearer(client_token("anna"))),
        401,
        "service_key_required",
    )
    assert_error(await api.post("/v1/events", json=event()), 401, "invalid_api_key")
    assert (await counts(db))["events"] == 0


async def test_twenty_concurrent_posts_make_one_event(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    await add_users(api, key, with_device("anna"), with_device("ben"))
    body = event(recipients={"user_ids": ["anna", "ben"]})
    responses = await asyncio.gather(
        *(api.post("/v1/events", json=body, headers=key) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    answers = [r.json() for r in responses]
    assert len({a["id"] for a in answers}) == 1
    assert sum(a["created"] for a in answers) == 1
    assert await fetch(
        db,
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM notifications),"
        " (SELECT count(*) FROM outbox)",
    ) == [(1, 2, 6)]


# -- status ----------------------------------------------------------------------------------


async def _notification_of(db: Conn, user_id: str) -> int:
    rows = await fetch(db, "SELECT id FROM notifications WHERE user_id = %s", user_id)
    return int(rows[0][0])


async def _set(db: Conn, user_id: str, channel: str, status: str, reason: str | None) -> int:
    rows = await fetch(
        db,
        "UPDATE outbox o SET status = %s, reason = %s,"
        " delivered_at = CASE WHEN %s = 'delivered' THEN now() END"
        " FROM notifications n WHERE n.id = o.notification_id AND n.user_id = %s"
        " AND o.consumer = %s RETURNING o.id",
        status,
        reason,
        status,
        user_id,
        channel,
    )
    return int(rows[0][0])


async def _attempts(db: Conn, outbox_id: int, *outcomes: str) -> None:
    for n, outcome in enumerate(outcomes, start=1):
        await db.execute(
            "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at,"
            " duration_ms, outcome, status_code, error, provider, bucket)"
            " VALUES (%s, %s, 'email', now(), 3.5, %s, 550, %s, NULL,"
            "         (SELECT bucket FROM outbox WHERE id = %s))",
            (outbox_id, n, outcome, f"550 mailbox unavailable ({n})", outbox_id),
        )
    await db.execute("UPDATE outbox SET attempts = %s WHERE id = %s", (len(outcomes), outbox_id))


async def test_status_counts_every_state_per_channel(
    api: httpx.AsyncClient, db_url: str, key: dict[str, str], db: Conn
) -> None:
    await add_users(
        api,
        key,
        with_device("anna"),
        {"id": "ben", "email": "ben@example.com"},  # no device: push has no contact
        with_device("cleo"),
        with_device("dora"),
    )
    await api.put("/v1/users/cleo/preferences", json={"muted": True}, headers=key)
    await api.put(
        "/v1/users/dora/preferences",
        json={"categories": {"content": {"email": False}}},
        headers=key,
    )
    posted = await api.post(
        "/v1/events",
        json=event(recipients={"user_ids": ["anna", "ben", "cleo", "dora", "ghost"]}),
        headers=key,
    )
    event_id = posted.json()["id"]

    status = (await api.get(f"/v1/events/{event_id}", headers=key)).json()
    zero = {"queued": 0, "held": 0, "sent": 0, "failed": 0, "dead": 0, "seen": 0}
    no_reasons = dict.fromkeys(
        ("muted", "preference", "no_contact", "seen", "expired", "erased"), 0
    )
    assert status["recipients"] == {"notified": 4, "no_recipient": 1}
    assert (status["type"], status["status"]) == ("new_episode", "done")
    assert status["channels"] == {
        "push": zero | {"queued": 2, "suppressed": no_reasons | {"muted": 1, "no_contact": 1}},
        "inbox": zero | {"queued": 3, "suppressed": no_reasons | {"muted": 1}},
        "email": zero | {"queued": 2, "suppressed": no_reasons | {"muted": 1, "preference": 1}},
    }

    # What dispatchers would have done meanwhile:
    await _set(db, "anna", "push", "delivered", None)
    await _set(db, "anna", "inbox", "delivered", None)
    await _attempts(db, await _set(db, "anna", "email", "failed", None), "retry", "failed")
    await _attempts(db, await _set(db, "ben", "email", "dead", None), "retry", "retry", "dead")
    await _set(db, "ben", "inbox", "pending", "quiet_hours")
    await _set(db, "dora", "push", "suppressed", "expired")
    # ... and anna saw the notification.
    anna = await _notification_of(db, "anna")
    seen = await api.post(
        "/v1/seen",
        json={"tag": "notifications", "id": str(anna)},
        headers=bearer(client_token("anna")),
    )
    assert seen.status_code == 200, seen.text

    status = (await api.get(f"/v1/events/{event_id}", headers=key)).json()
    assert status["channels"] == {
        "push": zero
        | {
            "sent": 1,
            "seen": 1,
            "suppressed": no_reasons | {"muted": 1, "no_contact": 1, "expired": 1},
        },
        "inbox": zero
        | {"queued": 1, "held": 1, "sent": 1, "seen": 1, "suppressed": no_reasons | {"muted": 1}},
        "email": zero
        | {"failed": 1, "dead": 1, "suppressed": no_reasons | {"muted": 1, "preference": 1}},
    }

    detail = await api.get(f"/v1/notifications/{anna}", headers=key)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert (body["id"], body["event_id"], body["user_id"], body["type"], body["category"]) == (
        str(anna),
        event_id,
        "anna",
        "new_episode",
        "content",
    )
    assert body["seen"] is True and body["seen_at"]
    assert body["channels"]["push"]["state"] == "sent"
    assert body["channels"]["push"]["delivered_at"]
    email = body["channels"]["email"]
    assert (email["state"], email["attempts"], email["error"]) == (
        "failed",
        2,
        "550 mailbox unavailable (2)",
    )
    ben = await api.get(f"/v1/notifications/{await _notification_of(db, 'ben')}", headers=key)
    channels = ben.json()["channels"]
    assert ben.json()["seen"] is False
    assert channels["push"] == {
        "state": "suppressed",
        "reason": "no_contact",
        "attempts": 0,
        "escalation": False,
        "next_attempt_at": None,
        "provider": None,
        "error": None,
        "delivered_at": None,
    }
    assert (channels["inbox"]["state"], channels["inbox"]["reason"]) == ("held", "quiet_hours")
    assert channels["inbox"]["next_attempt_at"]
    assert channels["email"]["state"] == "dead"

    # Nobody else's, and nothing that does not exist.
    other = auth(new_key(db_url, "promo", ("events:write",)))
    assert_error(await api.get(f"/v1/events/{event_id}", headers=other), 404, "unknown_event")
    assert_error(
        await api.get(f"/v1/notifications/{anna}", headers=other), 404, "unknown_notification"
    )
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert_error(await api.get(f"/v1/events/{missing}", headers=key), 404, "unknown_event")
    for missing in ("999999", "abc", "1" * 30):
        response = await api.get(f"/v1/notifications/{missing}", headers=key)
        assert_error(response, 404, "unknown_notification")


async def test_an_escalation_channel_is_listed_and_flagged(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    await add_users(api, key, with_device("anna", phone="+4915112345678"))
    posted = await api.post(
        "/v1/events",
        json=event(type="payment_receipt", data=RECEIPT),
        headers=key,
    )
    status = (await api.get(f"/v1/events/{posted.json()['id']}", headers=key)).json()
    assert sorted(status["channels"]) == ["email", "inbox", "push", "sms"]
    assert status["channels"]["sms"]["queued"] == 1
    notification = await _notification_of(db, "anna")
    sms = (await api.get(f"/v1/notifications/{notification}", headers=key)).json()["channels"]
    assert sms["sms"]["escalation"] is True and sms["push"]["escalation"] is False
