"""Digests against a real PostgreSQL: likes gather per recipient and comment, and each
digest becomes one notification when its window says so (flush_digests()), sent by the
real dispatcher; the windows' due times in the open_digests view; the fan-out's rules at
the flush; and two flushers racing the intake."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from service.config.load import Config, parse_config
from service.notify.catalog import sync_catalog
from service.notify.templates import load_templates
from service.schedule.digests import flush_due, open_digests
from service.sql import q
from tests.consumers import wait_until
from tests.integration.test_notify_scenarios import world
from tests.notify_api import assert_error, auth, counts, new_key, running_api
from tests.support import config_data, coordinator_plans, not_pushed_down

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
# On the Citus cluster too (`pytest --citus`): the flush and its race run there unchanged.
pytestmark = pytest.mark.citus
T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def like(actor: str, comment: str = "c-1") -> dict[str, str]:
    return {"actor": actor, "comment_id": comment, "comment_url": f"https://x.test/c/{comment}"}


def digest_type(**policy: Any) -> dict[str, Any]:
    """A digest-mode type over comment_likes' templates, with this window."""
    return {
        "category": "social",
        "channels": ["push", "inbox"],
        "templates": "comment_likes",
        "mode": "digest",
        "digest": {"key": "comment_id", "actor": "actor", "show_actors": 2} | policy,
    }


def with_types(db_url: str, **event_types: dict[str, Any]) -> dict[str, Any]:
    data = config_data(db_url)
    data["event_types"] |= event_types
    return data


async def sync(db: Conn, db_url: str, **event_types: dict[str, Any]) -> Config:
    config = parse_config(with_types(db_url, **event_types), "test-config")
    await sync_catalog(db, config, load_templates(config))
    return config


async def add_user(
    db: Conn, user_id: str, *, timezone: str | None = None, device: bool = True
) -> None:
    await db.execute("INSERT INTO users (id, timezone) VALUES (%s, %s)", (user_id, timezone))
    if device:
        await db.execute(
            "INSERT INTO push_devices (user_id, token, platform) VALUES (%s, %s, 'ios')",
            (user_id, f"tok-{user_id}"),
        )


async def like_event(
    db: Conn, owner: str, actor: str, comment: str = "c-1", type_: str = "comment_likes"
) -> str:
    """A like on the owner's comment, as a producer sharing the database posts it."""
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": "comments",
            "idempotency_key": uuid.uuid4().hex,
            "type": type_,
            "recipients": json.dumps({"user_ids": [owner]}),
            "data": json.dumps(like(actor, comment)),
            "send_at": None,
            "chunk": 1000,
        },
    )
    row = await cur.fetchone()
    assert row is not None and row[1] == "done"
    return str(row[0])


async def like_at(db: Conn, at: datetime, owner: str, comment: str, type_: str) -> None:
    event_id = await like_event(db, owner, "Ben", comment, type_)
    await db.execute("UPDATE digest_items SET created_at = %s WHERE event_id = %s", (at, event_id))


async def age(db: Conn, minutes: float) -> None:
    """Time passes for the open items (they are made older)."""
    # In UTC wall time: timestamptz arithmetic is STABLE, which Citus refuses on a column.
    await db.execute(
        "UPDATE digest_items"
        " SET created_at = timezone('UTC', timezone('UTC', created_at) - make_interval(secs => %s))"
        " WHERE notification_id IS NULL",
        (minutes * 60,),
    )


async def rows(db: Conn, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    cur = await db.execute(query, params)
    return await cur.fetchall()


async def test_thirty_likes_become_one_push_and_one_inbox_item(db: Conn, db_url: str) -> None:
    async with world(db_url) as w:
        await w.put_user("olga", devices=[{"token": "tok-olga", "platform": "ios"}])
        names = ["Anna", "Ben", *(f"Fan {n:02}" for n in range(3, 31))]

        async def post_likes(actors: list[str], start: int) -> None:
            for n, actor in enumerate(actors, start):
                body = {
                    "type": "comment_likes",
                    "idempotency_key": f"like-{n}",
                    "recipients": {"user_ids": ["olga"]},
                    "data": like(actor),
                }
                response = await w.api.post("/v1/events", json=body, headers=w.key)
                assert response.status_code == 202, response.text

        await post_likes(names, 1)
        [gathering] = await open_digests(db)
        assert (gathering.user_id, gathering.digest_key, gathering.items) == ("olga", "c-1", 30)
        # Sliding window: due five quiet minutes after the latest like.
        assert gathering.due_at == gathering.last_at + timedelta(minutes=5)
        assert await flush_due(db) == 0
        await asyncio.sleep(0.5)
        assert w.providers.sent == []

        await age(db, 6)
        # Due now: flushed by this call or by the dispatcher's own flush (at a minute's
        # tick, maybe in between), once either way: the pushes below count it.
        await flush_due(db)
        assert await open_digests(db) == []

        async def pushed(n: int) -> bool:
            return len(w.providers.to("push-primary")) == n

        await wait_until(lambda: pushed(1), 10, "the digest's push")
        push = w.providers.to("push-primary")[0].body
        assert (push["token"], push["type"]) == ("tok-olga", "comment_likes")
        assert push["title"] == "Anna, Ben and 28 others liked your comment"
        assert push["body"] == "30 likes: tap to see the discussion"
        assert push["data"] == {"comment_id": "c-1", "url": "https://x.test/c/c-1", "likes": "30"}
        [(data,)] = await rows(db, "SELECT data FROM notifications")
        assert data == {
            "total": 30,
            "actor_count": 30,
            "first_actors": ["Anna", "Ben"],
            "last_actors": ["Fan 30", "Fan 29"],
            "others": 28,
            "digest_key": "c-1",
            "last": like("Fan 30"),
        }

        async def listed(n: int) -> bool:
            return len((await w.inbox("olga"))["items"]) == n

        await wait_until(lambda: listed(1), 10, "the digest in the inbox")
        item = (await w.inbox("olga"))["items"][0]
        assert (item["type"], item["title"], item["link"]) == (
            "comment_likes",
            "Anna, Ben and 28 others liked your comment",
            "https://x.test/c/c-1",
        )

        # A second flush sends nothing.
        assert await flush_due(db) == 0
        await asyncio.sleep(0.5)
        assert len(w.providers.to("push-primary")) == 1

        # Likes after the flush start the next digest.
        await post_likes(["Cleo", "Dan"], 31)
        assert [(d.items, d.digest_key) for d in await open_digests(db)] == [(2, "c-1")]
        await age(db, 6)
        # Due now: flushed by this call or by the dispatcher's own flush (at a minute's
        # tick, maybe in between), once either way: the pushes below count it.
        await flush_due(db)
        assert await open_digests(db) == []
        await wait_until(lambda: pushed(2), 10, "the second digest's push")
        later = w.providers.to("push-primary")[1].body
        assert (later["title"], later["body"]) == (
            "Cleo and Dan liked your comment",
            "2 likes: tap to see the discussion",
        )
        await wait_until(lambda: listed(2), 10, "the second digest in the inbox")
        stamped = await rows(
            db,
            "SELECT notification_id, count(*) FROM digest_items"
            " GROUP BY notification_id ORDER BY notification_id",
        )
        assert [n for _, n in stamped] == [30, 2]


WINDOWS = {
    "likes_fixed": digest_type(window="fixed", every="PT24H"),
    "likes_daily": digest_type(window="daily", at="09:00"),
    "likes_sliding": digest_type(window="sliding", quiet="PT5M", max_wait="PT1H"),
    "likes_capped": digest_type(window="sliding", quiet="PT5M", max_wait="PT1H", max_items=3),
}


async def test_each_window_says_when_its_digests_are_due(db: Conn, db_url: str) -> None:
    await sync(db, db_url, **WINDOWS)
    await add_user(db, "anna")  # no time zone: UTC
    await add_user(db, "kenji", timezone="Asia/Tokyo")
    await add_user(db, "lena", timezone="Europe/Berlin")
    minute = timedelta(minutes=1)
    # fixed: a day after the first item, whatever came later.
    await like_at(db, T0, "anna", "c-1", "likes_fixed")
    await like_at(db, T0 + 180 * minute, "anna", "c-1", "likes_fixed")
    # daily at 09:00 in the recipient's zone, the next one after the first item.
    await like_at(db, datetime(2026, 3, 10, 23, 30, tzinfo=UTC), "kenji", "c-1", "likes_daily")
    await like_at(db, datetime(2026, 3, 11, 0, 30, tzinfo=UTC), "kenji", "c-2", "likes_daily")
    await like_at(db, datetime(2026, 3, 11, 8, 0, tzinfo=UTC), "anna", "c-3", "likes_daily")
    # The night Berlin goes to summer time: 09:00 is 07:00 UTC, not 08:00.
    await like_at(db, datetime(2026, 3, 28, 10, 0, tzinfo=UTC), "lena", "c-1", "likes_daily")
    # sliding: five quiet minutes after the latest item, at most an hour after the first.
    await like_at(db, T0, "anna", "c-1", "likes_sliding")
    await like_at(db, T0 + 3 * minute, "anna", "c-1", "likes_sliding")
    for n in range(18):  # a like every four minutes for 68 minutes: never five quiet ones
        await like_at(db, T0 + 4 * n * minute, "anna", "c-2", "likes_sliding")
    # max_items: due as soon as the third item came.
    for n in range(3):
        await like_at(db, T0 + n * minute, "anna", "c-1", "likes_capped")
    for n in range(2):
        await like_at(db, T0 + n * minute, "anna", "c-2", "likes_capped")

    due = {(d.type, d.user_id, d.digest_key): (d.items, d.due_at) for d in await open_digests(db)}
    assert due == {
        ("likes_fixed", "anna", "c-1"): (2, T0 + timedelta(days=1)),
        ("likes_daily", "kenji", "c-1"): (1, datetime(2026, 3, 11, 0, 0, tzinfo=UTC)),
        ("likes_daily", "kenji", "c-2"): (1, datetime(2026, 3, 12, 0, 0, tzinfo=UTC)),
        ("likes_daily", "anna", "c-3"): (1, datetime(2026, 3, 11, 9, 0, tzinfo=UTC)),
        ("likes_daily", "lena", "c-1"): (1, datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        ("likes_sliding", "anna", "c-1"): (2, T0 + 8 * minute),
        ("likes_sliding", "anna", "c-2"): (18, T0 + 60 * minute),
        ("likes_capped", "anna", "c-1"): (3, T0 + 2 * minute),
        ("likes_capped", "anna", "c-2"): (2, T0 + 6 * minute),
    }
    # The view also says what gathered when.
    [capped] = [
        d for d in await open_digests(db, "anna") if d.type == "likes_capped" and d.items == 3
    ]
    assert (capped.first_at, capped.last_at) == (T0, T0 + 2 * minute)
    assert await open_digests(db, "nobody") == []


async def test_a_flush_sends_what_is_due_and_leaves_the_rest(db: Conn, db_url: str) -> None:
    await sync(db, db_url, **WINDOWS)
    await add_user(db, "anna")
    # Due: five quiet minutes have passed.
    await like_event(db, "anna", "Ben", "quiet", "likes_sliding")
    await like_event(db, "anna", "Cleo", "quiet", "likes_sliding")
    await age(db, 6)
    # Due: full, though the last like came just now.
    for actor in ("Dan", "Eve", "Dan"):
        await like_event(db, "anna", actor, "full", "likes_capped")
    # Not due: the latest like is a minute old; a day has not passed.
    await like_event(db, "anna", "Fay", "busy", "likes_sliding")
    await like_event(db, "anna", "Gus", "today", "likes_fixed")
    await db.execute(
        "UPDATE digest_items SET created_at = now() - interval '1 minute'"
        " WHERE notification_id IS NULL AND digest_key IN ('busy', 'today')"
    )

    assert await flush_due(db) == 2
    sent = await rows(
        db,
        "SELECT n.type, n.data ->> 'digest_key', n.data ->> 'total', n.data -> 'first_actors',"
        " n.data ->> 'others', e.producer, e.type FROM notifications n"
        " JOIN events e ON e.id = n.event_id ORDER BY 1",
    )
    assert sent == [
        ("likes_capped", "full", "3", ["Dan", "Eve"], "0", "digest", "likes_capped"),
        ("likes_sliding", "quiet", "2", ["Ben", "Cleo"], "0", "digest", "likes_sliding"),
    ]
    left = {(d.type, d.digest_key, d.items) for d in await open_digests(db)}
    assert left == {("likes_sliding", "busy", 1), ("likes_fixed", "today", 1)}
    # The dispatchers of the channels that got rows are woken.
    woken = await rows(db, "SELECT args ->> 'consumer' FROM procrastinate_jobs ORDER BY 1")
    assert [w for (w,) in woken] == ["inbox", "push"]


async def test_the_flush_applies_the_fan_outs_rules(db: Conn, db_url: str) -> None:
    await sync(db, db_url)
    await add_user(db, "olga")  # social push switched off
    await add_user(db, "pavel", device=False)  # nowhere to push
    await add_user(db, "quinn")  # push in quiet hours, all day
    await add_user(db, "rita")  # muted everything
    await add_user(db, "sam")
    await db.execute(
        "INSERT INTO preferences (user_id, muted, channels, quiet_hours) VALUES"
        " ('olga', false, '{\"social\": {\"push\": false}}', '{}'),"
        ' (\'quinn\', false, \'{}\', \'{"push": {"start": "00:00", "end": "23:59:59"}}\'),'
        " ('rita', true, '{}', '{}')"
    )
    for owner in ("olga", "pavel", "quinn", "rita", "sam"):
        await like_event(db, owner, "Ben")
        # A second comment of sam's is due at the same flush: a second notification.
        if owner == "sam":
            await like_event(db, owner, "Ben", "c-2")
    await age(db, 6)
    assert await flush_due(db) == 6

    suppressed = await rows(
        db, "SELECT user_id, suppressed FROM notifications WHERE suppressed IS NOT NULL"
    )
    assert dict(suppressed) == {
        "olga": {"push": "preference"},
        "pavel": {"push": "no_contact"},
        "rita": {"push": "muted", "inbox": "muted"},
    }
    queued = await rows(
        db,
        "SELECT n.user_id, n.data ->> 'digest_key', o.consumer, o.reason,"
        # Held: due later than the flush (whose rows are due at once). Not "an hour later":
        # quiet hours ending at 23:59:59 end within the hour from 23:00 UTC.
        " o.next_attempt_at > now() FROM outbox o"
        " JOIN notifications n ON n.id = o.notification_id ORDER BY 1, 2, 3",
    )
    assert queued == [
        ("olga", "c-1", "inbox", None, False),
        ("pavel", "c-1", "inbox", None, False),
        ("quinn", "c-1", "inbox", None, False),
        ("quinn", "c-1", "push", "quiet_hours", True),  # held until the quiet hours end
        ("sam", "c-1", "inbox", None, False),
        ("sam", "c-1", "push", None, False),
        ("sam", "c-2", "inbox", None, False),
        ("sam", "c-2", "push", None, False),
    ]
    # A notification is one per (event, user): sam's second digest is under a second event.
    events = await rows(
        db,
        "SELECT e.notified, e.status FROM events e WHERE e.producer = 'digest' ORDER BY 1",
    )
    assert events == [(1, "done"), (5, "done")]


async def test_a_flush_meanwhile_returns_at_once_and_new_likes_wait_for_the_next(
    db: Conn, db_url: str
) -> None:
    await sync(db, db_url, comment_likes=digest_type(window="fixed", every=0.001))
    await add_user(db, "olga")
    await like_event(db, "olga", "Anna")
    await asyncio.sleep(0.01)
    async with await psycopg.AsyncConnection.connect(db_url) as first:
        # The first flush is under way (its transaction is open).
        cur = await first.execute(q("flush_digests"))
        assert await cur.fetchone() == (1,)
        # A like during the flush is not held up by it...
        await asyncio.wait_for(like_event(db, "olga", "Ben"), 5)
        # ...and a second flush does not wait: it finds the work taken.
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as second:
            assert await asyncio.wait_for(flush_due(second), 5) == 0
        await first.commit()
    # Ben's like was not in the first digest: it is the next one.
    [open_] = await open_digests(db)
    assert (open_.items, open_.digest_key) == (1, "c-1")
    await asyncio.sleep(0.01)
    assert await flush_due(db) == 1
    totals = await rows(db, "SELECT data -> 'first_actors' FROM notifications ORDER BY id")
    assert totals == [(["Anna"],), (["Ben"],)]


async def test_two_flushers_racing_the_intake_send_every_like_once(db: Conn, db_url: str) -> None:
    # Digests due a millisecond after their first like: every flush finds work, and likes
    # keep arriving while flushes run.
    types = {"comment_likes": digest_type(window="fixed", every=0.001)}
    owners = [f"owner-{n}" for n in range(8)]
    async with running_api(db_url, event_types=with_types(db_url, **types)["event_types"]) as api:
        for owner in owners:
            await add_user(db, owner)
        key = auth(new_key(db_url, "comments"))
        posted = 240
        intake_done = asyncio.Event()
        flushed: list[int] = []

        async def intake(part: int) -> None:
            for n in range(part, posted, 4):
                body = {
                    "type": "comment_likes",
                    "idempotency_key": f"like-{n}",
                    "recipients": {"user_ids": [owners[n % len(owners)]]},
                    "data": like(f"fan-{n % 13}", f"c-{n % 3}"),
                }
                response = await api.post("/v1/events", json=body, headers=key)
                assert response.status_code == 202, response.text

        async def flusher() -> None:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                while not intake_done.is_set():
                    flushed.append(await flush_due(conn))
                    await asyncio.sleep(0.005)

        async def feed() -> None:
            await asyncio.gather(*(intake(part) for part in range(4)))
            intake_done.set()

        await asyncio.gather(feed(), flusher(), flusher())
    await asyncio.sleep(0.01)
    flushed.append(await flush_due(db))

    [(items, open_, notifications)] = await rows(
        db,
        "SELECT count(*), count(*) FILTER (WHERE notification_id IS NULL),"
        " count(DISTINCT notification_id) FROM digest_items",
    )
    assert (items, open_) == (posted, 0)  # every like is in exactly one digest
    # Each notification is one digest, counted once by the flush that sent it; its total
    # and actors are those of the items stamped with it.
    assert sum(flushed) == notifications
    per_digest = await rows(
        db,
        "SELECT n.id, (n.data ->> 'total')::int, count(i.id),"
        " (n.data ->> 'actor_count')::int, count(DISTINCT i.actor),"
        " n.data ->> 'digest_key', min(i.digest_key), max(i.digest_key), n.user_id,"
        " min(i.user_id), max(i.user_id)"
        " FROM notifications n JOIN digest_items i ON i.notification_id = n.id"
        " GROUP BY n.id, n.bucket",
    )
    assert len(per_digest) == notifications
    for _, total, stamped, actors, distinct, key, lo, hi, user, u_lo, u_hi in per_digest:
        assert (total, actors) == (stamped, distinct)
        assert lo == hi == key and u_lo == u_hi == user  # one recipient and key per digest
    # Likes that came during a flush went to later digests: more digests than comments.
    assert notifications > len(owners) * 3
    # No digest was sent twice: one push and one inbox row each.
    [(deliveries, pairs)] = await rows(
        db, "SELECT count(*), count(DISTINCT (notification_id, consumer)) FROM outbox"
    )
    assert deliveries == pairs == 2 * notifications


async def test_an_erased_recipients_digest_is_dropped_unsent(db: Conn, db_url: str) -> None:
    await sync(db, db_url)
    await add_user(db, "olga")
    await add_user(db, "pavel")
    for owner in ("olga", "pavel"):
        await like_event(db, owner, "Ben")
    await db.execute("SELECT erase_user('olga')")
    await age(db, 6)
    assert await flush_due(db) == 1
    assert await rows(db, "SELECT user_id FROM digest_items") == [("pavel",)]
    assert await rows(db, "SELECT user_id FROM notifications") == [("pavel",)]


async def test_a_digest_event_without_its_key_is_refused_and_nothing_is_written(
    api: httpx.AsyncClient, db: Conn, db_url: str
) -> None:
    key = auth(new_key(db_url, "comments"))
    response = await api.put("/v1/users/olga", json={}, headers=key)
    assert response.status_code in (200, 201), response.text
    before = await counts(db)

    async def post(data: dict[str, Any]) -> httpx.Response:
        body = {
            "type": "comment_likes",
            "idempotency_key": "like-1",
            "recipients": {"user_ids": ["olga"]},
            "data": data,
        }
        return await api.post("/v1/events", json=body, headers=key)

    missing = {k: v for k, v in like("Ben").items() if k != "comment_id"}
    body = assert_error(await post(missing), 400, "missing_data")
    assert "comment_id" in body["message"] and "digests" in body["message"]
    body = assert_error(await post(like("Ben") | {"comment_id": None}), 400, "missing_data")
    assert "data.comment_id must be a string or a number" in body["message"]
    assert_error(await post(like("Ben") | {"actor": {"name": "Ben"}}), 400, "missing_data")
    assert await counts(db) == before
    assert await rows(db, "SELECT count(*) FROM digest_items") == [(0,)]

    # With its key it is accepted: a digest item, no notification yet.
    response = await post(like("Ben"))
    assert response.status_code == 202, response.text
    after = await counts(db)
    assert (after["events"], after["notifications"], after["outbox"]) == (1, 0, 0)
    assert await rows(db, "SELECT user_id, digest_key, actor FROM digest_items") == [
        ("olga", "c-1", "Ben")
    ]


async def test_on_the_cluster_likes_are_gathered_and_flushed_on_every_shard_at_once(
    db: Conn, db_url: str, request: pytest.FixtureRequest
) -> None:
    """A digest event's items are written, and later flushed, by statements that Citus
    runs on the workers (the coordinator's plans, as auto_explain reports them)."""
    if not request.config.getoption("--citus"):
        pytest.skip("the cluster's plans (--citus)")
    await sync(db, db_url, comment_likes=digest_type(window="fixed", every=3600))
    for owner in ("olga", "petr"):
        await add_user(db, owner)
    async with coordinator_plans(db) as plans:
        cur = await db.execute(
            q("accept_event"),
            {
                "producer": "comments",
                "idempotency_key": "like-1",
                "type": "comment_likes",
                "recipients": json.dumps({"user_ids": ["olga", "petr"]}),
                "data": json.dumps(like("Anna")),
                "send_at": None,
                "chunk": 1000,
            },
        )
        assert (await cur.fetchone() or ())[1] == "done"
    assert not_pushed_down(plans, "INSERT INTO digest_items") == []
    assert [(d.items, d.digest_key) for d in await open_digests(db)] == [(1, "c-1"), (1, "c-1")]
    # The flush too: the stamping, the notifications and their outbox rows.
    hours_ago = datetime.now(UTC) - timedelta(hours=2)
    await db.execute("UPDATE digest_items SET created_at = %s", (hours_ago,))
    async with coordinator_plans(db) as plans:
        assert await flush_due(db) == 2
    for statement in ("UPDATE digest_items", "INSERT INTO notifications", "INSERT INTO outbox"):
        assert not_pushed_down(plans, statement) == [], statement
    cur = await db.execute("SELECT count(*) FROM outbox")
    assert await cur.fetchone() == (4,)  # push and inbox each
