"""GET /v1/inbox/stream over real HTTP, with the real dispatcher delivering the inbox:
what a signed-in user's open page receives, what a reconnect resumes, and what it never
receives (another user's items, a change twice)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from service.app import create_app
from service.errors import ERROR_CODES
from service.http_limits import BoundedHttpToolsProtocol
from service.inbox_signal import LISTEN_CHANNEL
from service.notify import signed_tokens
from service.notify.inbox_stream import AUDIENCE
from service.notify.unsubscribe import make_token
from tests.consumers import patience, running, wait_until
from tests.notify_api import EPISODE, assert_error, auth, new_key, running_api
from tests.sse import EventStream, Message, open_stream, stream_token
from tests.support import bearer, client_token, make_config, notify_data

pytestmark = pytest.mark.citus

STATUS = ERROR_CODES["client_identity_required"][0]


def client(user: str) -> dict[str, str]:
    return bearer(client_token(user))


@pytest.fixture
async def key(db_url: str, api: httpx.AsyncClient) -> dict[str, str]:
    headers = auth(new_key(db_url, "content"))
    users = [{"id": "anna", "locale": "en"}, {"id": "ben", "locale": "en"}]
    response = await api.put("/v1/users", json={"users": users}, headers=headers)
    assert response.status_code == 200, response.text
    return headers


@pytest.fixture
async def dispatcher(db_url: str) -> AsyncIterator[None]:
    async with running(make_config(db_url), db_url):
        yield


async def send_episode(
    api: httpx.AsyncClient, key: dict[str, str], title: str, user: str = "anna"
) -> None:
    body = {
        "type": "new_episode",
        "idempotency_key": title,
        "recipients": {"user_ids": [user]},
        "data": EPISODE | {"title": title},
    }
    response = await api.post("/v1/events", json=body, headers=key)
    assert response.status_code == 202, response.text


async def mark_seen(api: httpx.AsyncClient, user: str, *ids: str) -> None:
    items = [{"tag": "notifications", "id": i} for i in ids]
    response = await api.post("/v1/seen", json={"items": items}, headers=client(user))
    assert response.status_code == 200, response.text


async def changes(stream: EventStream) -> dict[str, Any]:
    message = await stream.next()
    assert message.event == "changes", message
    assert isinstance(message.data, dict)
    return message.data


def titled(data: dict[str, Any], title: str) -> bool:
    return any(title in i["title"] + i["body"] for i in data["items"])


async def test_a_delivered_item_and_a_seen_mark_reach_every_stream_of_the_user_only(
    api: httpx.AsyncClient, key: dict[str, str], dispatcher: None
) -> None:
    anna_token = await stream_token(api, client("anna"))
    ben_token = await stream_token(api, client("ben"))
    async with (
        open_stream(api, anna_token) as tab1,
        open_stream(api, anna_token) as tab2,
        open_stream(api, ben_token) as other,
    ):
        for tab in (tab1, tab2, other):
            ready = await tab.next()
            assert ready.event == "ready" and ready.id
            assert ready.data == {"unseen": 0, "seen_tag": "notifications", "reset": False}
            assert tab.retry_ms == 1000

        await send_episode(api, key, "for-anna")
        got = [await changes(tab) for tab in (tab1, tab2)]
        for data in got:
            assert data["unseen"] == 1 and data["seen"] == []
            [item] = data["items"]
            assert item["type"] == "new_episode" and item["seen"] is False
            assert titled(data, "for-anna")
        item_id = got[0]["items"][0]["id"]

        # Seen on one device: every tab of the user learns it.
        await mark_seen(api, "anna", item_id)
        for tab in (tab1, tab2):
            assert await changes(tab) == {"items": [], "seen": [item_id], "unseen": 0}

        # Ben's first message is his own item: nothing of anna's came before it.
        await send_episode(api, key, "for-ben", user="ben")
        data = await changes(other)
        assert len(data["items"]) == 1 and titled(data, "for-ben") and data["unseen"] == 1


async def test_a_reconnect_with_the_last_id_misses_nothing_and_repeats_nothing(
    api: httpx.AsyncClient, key: dict[str, str], dispatcher: None
) -> None:
    token = await stream_token(api, client("anna"))
    async with open_stream(api, token) as tab:
        assert (await tab.next()).event == "ready"
        await send_episode(api, key, "first")
        message = await tab.next()
    assert message.id is not None and titled(message.data, "first")
    first_id = message.data["items"][0]["id"]

    # While no stream is open: a second item comes and the first is seen.
    await send_episode(api, key, "second")
    await mark_seen(api, "anna", first_id)

    items: list[dict[str, Any]] = []
    seen: list[str] = []
    last = message.id
    async with open_stream(api, token, last_event_id=last) as tab:
        # The second item may still be on its way through the dispatcher.
        while not (items and seen):
            resumed = await tab.next()
            assert resumed.event == "changes" and resumed.id
            items += resumed.data["items"]
            seen += resumed.data["seen"]
            last = resumed.id
    assert [i["title"] for i in items if "first" in i["title"] + i["body"]] == []
    assert len(items) == 1 and titled({"items": items}, "second")
    assert seen == [first_id]

    # Caught up: a resume now brings nothing again.
    async with open_stream(api, token, last_event_id=last) as tab:
        assert await changes(tab) == {"items": [], "seen": [], "unseen": 1}


async def test_a_change_committed_after_a_later_one_is_still_sent(
    api: httpx.AsyncClient, db_url: str
) -> None:
    """Writers commit in any order: the slow one's change comes once it commits."""
    token = await stream_token(api, client("anna"))
    insert = "INSERT INTO inbox_changes (user_id, item_id, change) VALUES ('anna', %s, 'seen')"
    wake = "SELECT pg_notify(%s, 'anna')"
    async with (
        open_stream(api, token) as tab,
        await psycopg.AsyncConnection.connect(db_url) as slow,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as fast,
    ):
        assert (await tab.next()).event == "ready"
        await slow.execute(insert, ("41",))  # its transaction stays open
        await fast.execute(insert, ("42",))
        await fast.execute(wake, (LISTEN_CHANNEL,))
        assert (await changes(tab))["seen"] == ["42"]
        await slow.execute(wake, (LISTEN_CHANNEL,))
        await slow.commit()
        assert (await changes(tab))["seen"] == ["41"]


async def test_a_lost_listener_comes_back_and_its_streams_catch_up(
    api: httpx.AsyncClient, db_url: str
) -> None:
    token = await stream_token(api, client("anna"))
    find = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'mark-notify-inbox-listener'"
    )
    async with (
        open_stream(api, token) as tab,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as db,
    ):
        assert (await tab.next()).event == "ready"

        async def listener() -> list[int]:
            return [row[0] for row in await (await db.execute(find)).fetchall()]

        await wait_until(lambda: _non_empty(listener()), 10, "the stream's listener")
        [pid] = await listener()
        await db.execute("SELECT pg_terminate_backend(%s::integer)", (pid,))
        # Written, and announced, while nobody listens: the NOTIFY is lost.
        await db.execute(
            "INSERT INTO inbox_changes (user_id, item_id, change) VALUES ('anna', '7', 'seen')"
        )
        await db.execute("SELECT pg_notify(%s, 'anna')", (LISTEN_CHANNEL,))
        assert (await changes(tab))["seen"] == ["7"]
        [again] = await listener()
        assert again != pid


async def _non_empty(rows: Any) -> bool:
    return bool(await rows)


async def test_refusals(api: httpx.AsyncClient, db_url: str) -> None:
    # The token is only for a client, trading its own JWT.
    assert_error(await api.post("/v1/inbox/stream-token"), 401, "unauthenticated")
    service_key = auth(new_key(db_url, "content"))
    refused = await api.post("/v1/inbox/stream-token", headers=service_key)
    assert_error(refused, STATUS, "client_identity_required")

    config = make_config(db_url)
    good = await stream_token(api, client("anna"))
    expired = signed_tokens.sign(
        config.notify, AUDIENCE, {"sub": "anna"}, config.notify.inbox_stream.token_ttl, now=0
    )
    unsubscribe = make_token(config.notify, "anna", "content")
    for token in ("", "x.y.z", good[:-2] + "AA", expired, unsubscribe):
        response = await api.get("/v1/inbox/stream", params={"token": token})
        assert_error(response, 401, "invalid_stream_token")
    for last in ("1", "v1.1.5:3:", "v1.1.3:9:2", "v1.1.3:9:5,4", "v1.1.3:9:" + "4," * 2000 + "5"):
        response = await api.get(
            "/v1/inbox/stream", params={"token": good}, headers={"Last-Event-ID": last}
        )
        assert_error(response, 400, "invalid_last_event_id")


async def test_a_position_older_than_resume_for_is_told_to_reload(api: httpx.AsyncClient) -> None:
    token = await stream_token(api, client("anna"))
    async with open_stream(api, token, last_event_id="v1.1000.5:5:") as tab:
        message: Message = await tab.next()
    assert message.event == "ready" and message.data["reset"] is True


async def test_streams_are_counted_in_the_metrics(api: httpx.AsyncClient) -> None:
    """Deltas: the metrics of the tests' processes add up across tests."""

    async def value(name: str) -> float:
        text = (await api.get("/metrics")).text
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name))

    opened = 'mark_notify_inbox_streams_total{change="opened"}'
    closed = 'mark_notify_inbox_streams_total{change="closed"}'
    ready = 'mark_notify_inbox_stream_messages_total{event="ready"}'
    timed = 'mark_notify_http_request_duration_seconds_count{method="GET",route="/v1/inbox/stream"}'
    before = {name: await value(name) for name in (opened, closed, ready, timed)}

    async def grew(name: str) -> bool:
        return await value(name) > before[name]

    token = await stream_token(api, client("anna"))
    async with open_stream(api, token) as tab:
        assert (await tab.next()).event == "ready"
        await wait_until(lambda: grew(opened), 10, "the stream counted")
        assert await value(closed) == before[closed]
    await wait_until(lambda: grew(closed), 10, "its end counted")
    assert await value(opened) - before[opened] == 1
    assert await value(ready) - before[ready] == 1
    # A stream's hour is not a latency: no duration is observed for it (a refusal's is).
    assert await value(timed) == before[timed]


async def test_streams_per_user_are_bounded(db_url: str) -> None:
    notify = notify_data()["notify"] | {"inbox_stream": {"per_user": 1}}
    async with running_api(db_url, notify=notify) as api:
        token = await stream_token(api, client("anna"))
        async with open_stream(api, token) as tab:
            assert (await tab.next()).event == "ready"
            response = await api.get("/v1/inbox/stream", params={"token": token})
            assert_error(response, 429, "too_many_streams")
            other = await stream_token(api, client("ben"))
            async with open_stream(api, other) as bens:
                assert (await bens.next()).event == "ready"
        # The place is given back when a stream ends.
        async with open_stream(api, token) as tab:
            assert (await tab.next()).event == "ready"


async def test_open_streams_end_as_soon_as_the_server_stops(db_url: str) -> None:
    """uvicorn's graceful shutdown (its SIGTERM) waits for every response to end: open
    streams end at once, not at their next heartbeat (an hour away here)."""
    notify = notify_data()["notify"] | {"inbox_stream": {"heartbeat": "PT1H"}}
    config = uvicorn.Config(
        create_app(make_config(db_url, notify=notify)),
        http=BoundedHttpToolsProtocol,  # as production runs it: it tells the streams
        log_level="warning",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: _started(server), 10, "uvicorn to start")
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as api:
            token = await stream_token(api, client("anna"))
            other = await stream_token(api, client("ben"))
            async with open_stream(api, token) as tab, open_stream(api, other) as bens:
                for stream in (tab, bens):
                    assert (await stream.next()).event == "ready"
                server.should_exit = True
                for stream in (tab, bens):
                    with pytest.raises(EOFError):
                        await stream.next()
        await asyncio.wait_for(asyncio.shield(serving), patience(10))
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def _started(server: uvicorn.Server) -> bool:
    return server.started
