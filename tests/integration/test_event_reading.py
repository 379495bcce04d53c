"""Who reads an event's status: its producer's keys (events:write), and keys with
events:read, which read any producer's (operators, support tools, the events schedules
post); any other producer's key is told the event does not exist."""

from __future__ import annotations

import httpx
import pytest

from tests.notify_api import EPISODE, Conn, assert_error, auth, counts, new_key

pytestmark = pytest.mark.timeout(120)


async def test_events_read_reads_any_producers_events_and_writes_nothing(
    db_url: str, db: Conn, api: httpx.AsyncClient
) -> None:
    poster = auth(new_key(db_url, "content", ("events:write", "users:write")))
    other = auth(new_key(db_url, "promo", ("events:write",)))
    reader = auth(new_key(db_url, "support", ("events:read",)))
    assert (await api.put("/v1/users/anna", json={}, headers=poster)).status_code == 201
    event = {
        "type": "new_episode",
        "idempotency_key": "episode-3",
        "recipients": {"user_ids": ["anna"]},
        "data": EPISODE,
    }
    posted = await api.post("/v1/events", json=event, headers=poster)
    assert posted.status_code == 202, posted.text
    event_id = posted.json()["id"]
    cur = await db.execute("SELECT id FROM notifications WHERE event_id = %s", [event_id])
    row = await cur.fetchone()
    assert row is not None
    notification = row[0]

    # Another producer's key: as if the event did not exist.
    assert_error(await api.get(f"/v1/events/{event_id}", headers=other), 404, "unknown_event")
    response = await api.get(f"/v1/notifications/{notification}", headers=other)
    assert_error(response, 404, "unknown_notification")

    # events:read: the same answer its producer gets.
    own = await api.get(f"/v1/events/{event_id}", headers=poster)
    read = await api.get(f"/v1/events/{event_id}", headers=reader)
    assert own.status_code == read.status_code == 200, read.text
    assert read.json() == own.json()
    assert read.json()["id"] == event_id and read.json()["type"] == "new_episode"
    own = await api.get(f"/v1/notifications/{notification}", headers=poster)
    read = await api.get(f"/v1/notifications/{notification}", headers=reader)
    assert own.status_code == read.status_code == 200, read.text
    assert read.json() == own.json() and read.json()["user_id"] == "anna"
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error(await api.get(f"/v1/events/{missing}", headers=reader), 404, "unknown_event")

    # It reads; it does not post.
    before = await counts(db)
    response = await api.post("/v1/events", json=event | {"idempotency_key": "x"}, headers=reader)
    body = assert_error(response, 403, "insufficient_scope")
    assert "'events:write'" in body["message"]
    assert await counts(db) == before


async def test_a_key_with_neither_scope_cannot_read_events(
    db_url: str, api: httpx.AsyncClient
) -> None:
    users_only = auth(new_key(db_url, "crm", ("users:read",)))
    missing = "00000000-0000-0000-0000-000000000000"
    body = assert_error(
        await api.get(f"/v1/events/{missing}", headers=users_only), 403, "insufficient_scope"
    )
    assert "'events:write' or 'events:read'" in body["message"]
