"""GET /v1/inbox over real HTTP: delivered notifications, newest first, rendered, paged,
and marked seen through POST /v1/seen."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.config.load import parse_config
from service.schedule.digests import flush_due
from tests.consumers import running, wait_until
from tests.notify_api import (
    EPISODE,
    RECEIPT,
    Conn,
    assert_error,
    auth,
    new_key,
)
from tests.support import bearer, client_token, config_data, driver_token


def anna() -> dict[str, str]:
    # Made per use: a token made at import would expire in a long run of the suite.
    return bearer(client_token("anna"))


LIKES = {"actor": "Ben", "comment_id": "c-1", "comment_url": "https://x/c/1"}


@pytest.fixture
async def key(db_url: str, api: httpx.AsyncClient) -> dict[str, str]:
    """A producer key; anna (Russian) and ben exist."""
    headers = auth(new_key(db_url, "content"))
    users = [{"id": "anna", "locale": "ru"}, {"id": "ben", "locale": "en"}]
    response = await api.put("/v1/users", json={"users": users}, headers=headers)
    assert response.status_code == 200, response.text
    return headers


async def post(
    api: httpx.AsyncClient,
    key: dict[str, str],
    type_: str,
    data: dict[str, Any],
    idempotency_key: str,
    user_ids: tuple[str, ...] = ("anna",),
) -> str:
    body = {
        "type": type_,
        "idempotency_key": idempotency_key,
        "recipients": {"user_ids": list(user_ids)},
        "data": data,
    }
    response = await api.post("/v1/events", json=body, headers=key)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["id"]
    return event_id


async def post_like(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, idempotency_key: str
) -> str:
    """A like, sent as a digest of its own (comment_likes is a digest type): posted,
    its quiet minutes passed, flushed; the id of the event its notification is under."""
    await post(api, key, "comment_likes", LIKES, idempotency_key)
    await db.execute("UPDATE digest_items SET created_at = created_at - interval '1 hour'")
    assert await flush_due(db) == 1
    cur = await db.execute("SELECT event_id FROM notifications ORDER BY id DESC LIMIT 1")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def deliver_inbox(db: Conn, *event_ids: str) -> None:
    """What the dispatcher's inbox transport does to these events' inbox rows."""
    await db.execute(
        "UPDATE outbox o SET status = 'delivered', delivered_at = now()"
        " FROM notifications n WHERE n.id = o.notification_id AND o.consumer = 'inbox'"
        " AND n.event_id = ANY(%s::uuid[])",
        (list(event_ids),),
    )


async def inbox(api: httpx.AsyncClient, headers: dict[str, str] | None = None, **query: Any) -> Any:
    response = await api.get("/v1/inbox", params=query, headers=headers or anna())
    assert response.status_code == 200, response.text
    return response.json()


async def test_delivered_notifications_newest_first_rendered_in_the_users_locale(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    episode = await post(api, key, "new_episode", EPISODE, "e1")
    receipt = await post(api, key, "payment_receipt", RECEIPT, "r1")
    likes = await post_like(api, key, db, "l1")
    # Code in data is shown as text, never run.
    sneaky = await post(api, key, "new_episode", EPISODE | {"title": "{{ 7 * 7 }}"}, "e2")
    pending = await post_like(api, key, db, "l2")
    await deliver_inbox(db, episode, receipt, likes, sneaky)

    page = await inbox(api)
    items = page["items"]
    assert page["unseen"] == 4 and page["next_cursor"] is None
    assert [int(i["id"]) for i in items] == sorted((int(i["id"]) for i in items), reverse=True)
    assert [i["type"] for i in items] == [
        "new_episode",
        "comment_likes",
        "payment_receipt",
        "new_episode",
    ]
    assert items[3] | {"id": None, "created_at": None} == {
        "id": None,
        "type": "new_episode",
        "category": "content",
        "title": "Новая серия «Dark»",
        "body": "Вышла 3-я серия — «Past and Present».",
        "link": "https://x/e3",
        "created_at": None,
        "seen": False,
    }
    assert items[0]["body"] == "Вышла 3-я серия — «{{ 7 * 7 }}»."
    # No Russian template: the type's default locale.
    assert (items[2]["title"], items[2]["body"], items[2]["link"]) == (
        "Payment received",
        "9.99 EUR for order o-1.",
        None,
    )
    assert (items[1]["title"], items[1]["link"]) == ("Ben liked your comment", "https://x/c/1")
    assert items[1]["category"] == "social" and items[2]["category"] == "billing"
    # The pending one is not listed until the inbox channel has delivered it.
    cur = await db.execute(
        "SELECT o.status FROM outbox o JOIN notifications n ON n.id = o.notification_id"
        " WHERE n.event_id = %s AND o.consumer = 'inbox'",
        (pending,),
    )
    assert await cur.fetchall() == [("pending",)]
    assert len(items) == 4

    # Nobody else's.
    assert await inbox(api, bearer(client_token("ben"))) == {
        "items": [],
        "unseen": 0,
        "next_cursor": None,
        "seen_tag": "notifications",
    }


async def test_pages_walk_back_with_the_cursor(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    events = [await post(api, key, "new_episode", EPISODE, f"e{n}") for n in range(25)]
    await deliver_inbox(db, *events)

    seen_ids: list[int] = []
    cursor = None
    sizes = []
    while True:
        page = await inbox(api, limit=10, **({"cursor": cursor} if cursor else {}))
        sizes.append(len(page["items"]))
        seen_ids += [int(i["id"]) for i in page["items"]]
        assert page["unseen"] == 25
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [10, 10, 5]
    assert seen_ids == sorted(seen_ids, reverse=True) and len(set(seen_ids)) == 25
    assert len((await inbox(api))["items"]) == 20  # the default limit
    assert len((await inbox(api, limit=100))["items"]) == 25

    for query in ({"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"cursor": "abc"}):
        response = await api.get("/v1/inbox", params=query, headers=anna())
        assert_error(response, 400, "invalid_query")


async def test_marking_an_item_seen_through_post_seen(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn
) -> None:
    events = [await post(api, key, "new_episode", EPISODE, f"e{n}") for n in range(3)]
    await deliver_inbox(db, *events)
    before = await inbox(api)
    assert before["unseen"] == 3 and not any(i["seen"] for i in before["items"])
    target = before["items"][1]["id"]

    for expected in ("recorded", "duplicate"):
        response = await api.post(
            "/v1/seen", json={"tag": "notifications", "id": target}, headers=anna()
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == expected
        after = await inbox(api)
        assert after["unseen"] == 2
        assert [i["seen"] for i in after["items"]] == [False, True, False]

    # Someone else marking the same id changes nothing for anna.
    await api.post(
        "/v1/seen",
        json={"tag": "notifications", "id": before["items"][0]["id"]},
        headers=bearer(client_token("ben")),
    )
    assert (await inbox(api))["unseen"] == 2


async def test_only_signed_in_clients(api: httpx.AsyncClient, key: dict[str, str]) -> None:
    assert_error(await api.get("/v1/inbox"), 401, "unauthenticated")
    response = await api.get("/v1/inbox", headers=bearer(driver_token()))
    assert_error(response, 403, "client_identity_required")
    response = await api.get("/v1/inbox", headers=bearer("not.a.token"))
    assert_error(response, 401, "invalid_token")


async def test_the_inbox_transport_delivers_into_the_inbox(
    api: httpx.AsyncClient, key: dict[str, str], db: Conn, db_url: str
) -> None:
    await post_like(api, key, db, "l1")
    assert (await inbox(api))["items"] == []
    # A dispatcher that runs the inbox channel only (the others are switched off).
    data = config_data(db_url)
    for name in ("email", "sms", "push"):
        data["channels"][name]["enabled"] = False
    async with running(parse_config(data, "test-config"), db_url):

        async def listed() -> bool:
            return len((await inbox(api))["items"]) == 1

        await wait_until(listed, 10, "the inbox row to be delivered")
    item = (await inbox(api))["items"][0]
    assert (item["type"], item["title"]) == ("comment_likes", "Ben liked your comment")
