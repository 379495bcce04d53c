"""The SQL fan-out (notify_event, notify_materialize) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from service.config.load import Config
from service.notify.catalog import sync_catalog
from service.notify.fanout import materialize_event, materialize_parallel
from service.notify.templates import load_templates
from service.sql import q
from tests.support import coordinator_plans, make_config, not_pushed_down

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# On the Citus cluster too (`pytest --citus`): the fan-out runs there unchanged.
pytestmark = pytest.mark.citus

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}


async def setup(db: Conn, db_url: str) -> Config:
    config = make_config(db_url)
    await sync_catalog(db, config, load_templates(config))
    return config


async def add_user(
    db: Conn,
    user_id: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    devices: int = 0,
    timezone: str | None = None,
    topics: tuple[str, ...] = (),
) -> None:
    await db.execute(
        "INSERT INTO users (id, email, phone, timezone) VALUES (%s, %s, %s, %s)",
        (user_id, email, phone, timezone),
    )
    for n in range(devices):
        await db.execute(
            "INSERT INTO push_devices (user_id, token, platform) VALUES (%s, %s, 'ios')",
            (user_id, f"tok-{user_id}-{n}"),
        )
    for topic in topics:
        await db.execute(
            "INSERT INTO user_topics (topic, user_id) VALUES (%s, %s)", (topic, user_id)
        )


async def accept(
    db: Conn,
    type_: str,
    recipients: dict[str, Any],
    data: dict[str, Any],
    *,
    key: str = "k1",
    producer: str = "content",
    send_at: datetime | None = None,
) -> tuple[str, str, bool]:
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": producer,
            "idempotency_key": key,
            "type": type_,
            "recipients": json.dumps(recipients),
            "data": json.dumps(data),
            "send_at": send_at,
            "chunk": 1000,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0]), row[1], row[2]


async def deliveries(db: Conn) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(user, channel) -> (status, reason) of every notification outbox row."""
    cur = await db.execute(
        "SELECT n.user_id, o.consumer, o.status, o.reason FROM outbox o"
        " JOIN notifications n ON n.id = o.notification_id"
    )
    return {(u, c): (s, r) for u, c, s, r in await cur.fetchall()}


async def suppressed(db: Conn) -> dict[str, dict[str, str]]:
    cur = await db.execute(
        "SELECT user_id, suppressed FROM notifications WHERE suppressed IS NOT NULL"
    )
    return {u: s for u, s in await cur.fetchall()}


async def test_an_explicit_list_fans_out_at_once_applying_contacts_and_preferences(
    db: Conn, db_url: str
) -> None:
    await setup(db, db_url)
    await add_user(db, "anna", email="anna@x.test", devices=2)
    await add_user(db, "ben", email="ben@x.test")  # no device: push has no contact
    await add_user(db, "cleo", email="cleo@x.test", devices=1)
    await db.execute(
        "INSERT INTO preferences (user_id, channels) VALUES ('cleo', %s)",
        (json.dumps({"content": {"email": False}}),),
    )
    event_id, status, created = await accept(
        db, "new_episode", {"user_ids": ["anna", "ben", "cleo", "ghost"]}, EPISODE
    )
    assert (status, created) == ("done", True)
    cur = await db.execute("SELECT notified, no_recipient FROM events WHERE id = %s", (event_id,))
    assert await cur.fetchone() == (3, 1)
    assert await deliveries(db) == {
        ("anna", "push"): ("pending", None),
        ("anna", "inbox"): ("pending", None),
        ("anna", "email"): ("pending", None),
        ("ben", "inbox"): ("pending", None),
        ("ben", "email"): ("pending", None),
        ("cleo", "push"): ("pending", None),
        ("cleo", "inbox"): ("pending", None),
    }
    assert await suppressed(db) == {"ben": {"push": "no_contact"}, "cleo": {"email": "preference"}}
    # The dispatchers of the channels that got rows are woken.
    cur = await db.execute("SELECT args->>'consumer' FROM procrastinate_jobs ORDER BY 1")
    assert [r[0] for r in await cur.fetchall()] == ["email", "inbox", "push"]


async def test_mute_spares_transactional_categories(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await add_user(db, "anna", email="anna@x.test", phone="+100", devices=1)
    await db.execute("INSERT INTO preferences (user_id, muted) VALUES ('anna', true)")
    await accept(db, "new_episode", {"user_ids": ["anna"]}, EPISODE, key="ep")
    receipt = {"amount": "9.99", "currency": "EUR", "order_id": "o-1", "paid_at": "today"}
    await accept(db, "payment_receipt", {"user_ids": ["anna"]}, receipt, key="rc")
    cur = await db.execute(
        "SELECT n.type, o.consumer FROM outbox o JOIN notifications n ON n.id = o.notification_id"
        " ORDER BY 1, 2"
    )
    assert await cur.fetchall() == [
        ("payment_receipt", "email"),
        ("payment_receipt", "inbox"),
        ("payment_receipt", "push"),
        ("payment_receipt", "sms"),
    ]
    assert await suppressed(db) == {"anna": {"push": "muted", "inbox": "muted", "email": "muted"}}


async def test_escalation_row_is_owed_after_its_delay(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await add_user(db, "anna", email="a@x.test", phone="+100", devices=1)
    receipt = {"amount": "1", "currency": "EUR", "order_id": "o-2", "paid_at": "now"}
    await accept(db, "payment_receipt", {"user_ids": ["anna"]}, receipt)
    cur = await db.execute(
        "SELECT payload, next_attempt_at - created_at FROM outbox WHERE consumer = 'sms'"
    )
    payload, delay = await cur.fetchone() or (None, None)
    assert payload == {"escalation": True}
    assert timedelta(seconds=599) < delay < timedelta(seconds=601)


async def test_quiet_hours_hold_a_row_until_they_end_in_the_users_zone(
    db: Conn, db_url: str
) -> None:
    await setup(db, db_url)
    now = datetime.now(UTC)
    zone = "Asia/Tokyo"
    local = await (await db.execute("SELECT (now() AT TIME ZONE %s)::time", (zone,))).fetchone()
    assert local is not None
    start = (datetime.combine(now.date(), local[0]) - timedelta(hours=1)).time()
    end = (datetime.combine(now.date(), local[0]) + timedelta(hours=2)).time()
    await add_user(db, "anna", email="a@x.test", devices=1, timezone=zone)
    quiet = {"push": {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}}
    await db.execute(
        "INSERT INTO preferences (user_id, quiet_hours) VALUES ('anna', %s)", (json.dumps(quiet),)
    )
    await accept(db, "new_episode", {"user_ids": ["anna"]}, EPISODE)
    cur = await db.execute(
        "SELECT consumer, reason, next_attempt_at - now() FROM outbox ORDER BY consumer"
    )
    rows = {c: (r, d) for c, r, d in await cur.fetchall()}
    assert rows["email"][0] is None and rows["email"][1] <= timedelta(0)
    reason, wait = rows["push"]
    assert reason == "quiet_hours"
    # Held until the window's end: about two hours (minutes were cut off above).
    assert timedelta(hours=1, minutes=58) < wait <= timedelta(hours=2)


async def test_quiet_hours_end_handles_windows_across_midnight(db: Conn) -> None:
    cases = [
        ("2024-05-01 23:30+00", {"start": "22:00", "end": "07:00"}, "2024-05-02 07:00:00+00"),
        ("2024-05-02 06:59+00", {"start": "22:00", "end": "07:00"}, "2024-05-02 07:00:00+00"),
        ("2024-05-02 07:00+00", {"start": "22:00", "end": "07:00"}, "2024-05-02 07:00:00+00"),
        ("2024-05-02 12:00+00", {"start": "22:00", "end": "07:00"}, "2024-05-02 12:00:00+00"),
        ("2024-05-02 13:00+00", {"start": "12:00", "end": "14:00"}, "2024-05-02 14:00:00+00"),
    ]
    for at, window, expected in cases:
        cur = await db.execute(
            "SELECT quiet_hours_end(%s::timestamptz, 'UTC', %s::jsonb)::text",
            (at, json.dumps(window)),
        )
        assert (await cur.fetchone()) == (expected,), (at, window)
    # Moscow is UTC+3: 23:30 local is 20:30 UTC, the window ends at 07:00 local = 04:00 UTC.
    cur = await db.execute(
        "SELECT quiet_hours_end('2024-05-01 20:30+00', 'Europe/Moscow',"
        ' \'{"start": "22:00", "end": "07:00"}\')::text'
    )
    assert (await cur.fetchone()) == ("2024-05-02 04:00:00+00",)


async def test_a_topic_is_materialized_in_chunks_by_the_task(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    for n in range(25):
        await add_user(db, f"u{n:02}", email=f"u{n}@x.test", topics=("series-1",) if n % 2 else ())
    event_id, status, _ = await accept(db, "new_episode", {"topic": "series-1"}, EPISODE)
    assert status == "materializing"
    cur = await db.execute("SELECT task_name, args->>'event_id' FROM procrastinate_jobs")
    assert await cur.fetchall() == [("notify.materialize", event_id)]
    covered = await materialize_event(db, event_id, chunk=5)
    assert covered == 12
    cur = await db.execute("SELECT status, notified, cursor FROM events")
    assert await cur.fetchone() == ("done", 12, "u23")
    cur = await db.execute("SELECT count(*), count(DISTINCT user_id) FROM notifications")
    assert await cur.fetchone() == (12, 12)
    # Running it again (a retried job) adds nothing.
    assert await materialize_event(db, event_id, chunk=5) == 0
    cur = await db.execute("SELECT count(*) FROM outbox")
    assert await cur.fetchone() == (24,)  # inbox and email each; nobody has a device


async def test_a_future_send_at_waits_in_the_job_queue(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await add_user(db, "anna", email="a@x.test")
    later = datetime.now(UTC) + timedelta(hours=3)
    event_id, status, _ = await accept(
        db, "new_episode", {"user_ids": ["anna"]}, EPISODE, send_at=later
    )
    assert status == "scheduled"
    cur = await db.execute("SELECT scheduled_at FROM procrastinate_jobs")
    row = await cur.fetchone()
    assert row is not None and abs((row[0] - later).total_seconds()) < 1
    assert (await (await db.execute("SELECT count(*) FROM notifications")).fetchone()) == (0,)
    await materialize_event(db, event_id, chunk=100)
    cur = await db.execute("SELECT min(next_attempt_at) FROM outbox")
    row = await cur.fetchone()
    assert row is not None and abs((row[0] - later).total_seconds()) < 1


async def test_inline_users_are_upserted_keeping_fields_left_out(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await add_user(db, "anna", email="old@x.test", phone="+1", timezone="Europe/Paris")
    users = [{"id": "anna", "email": "new@x.test"}, {"id": "zed", "phone": "+2"}]
    await accept(db, "new_episode", {"users": users}, EPISODE)
    cur = await db.execute("SELECT id, email, phone, timezone FROM users ORDER BY id")
    assert await cur.fetchall() == [
        ("anna", "new@x.test", "+1", "Europe/Paris"),
        ("zed", None, "+2", None),
    ]
    cur = await db.execute("SELECT recipients FROM events")
    assert await cur.fetchone() == ({"user_ids": ["anna", "zed"]},)


async def test_concurrent_repeats_make_one_event(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    await add_user(db, "anna", email="a@x.test")

    async def post() -> tuple[str, str, bool]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await accept(conn, "new_episode", {"user_ids": ["anna"]}, EPISODE, key="same")

    results = await asyncio.gather(*(post() for _ in range(20)))
    assert len({r[0] for r in results}) == 1
    assert sum(1 for r in results if r[2]) == 1
    counts = await db.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM notifications),"
        " (SELECT count(*) FROM outbox)"
    )
    assert await counts.fetchone() == (1, 1, 2)


@pytest.mark.parametrize(
    ("type_", "recipients", "data", "message"),
    [
        ("nope", {"user_ids": ["a"]}, EPISODE, "unknown event type"),
        ("new_episode", {"user_ids": ["a"]}, {"series": "x"}, "lacks episode, title, url"),
        ("new_episode", {"user_ids": ["a"], "all": True}, EPISODE, "exactly one of"),
        ("new_episode", {}, EPISODE, "exactly one of"),
    ],
)
async def test_sql_callers_get_clear_errors_and_nothing_is_written(
    db: Conn,
    db_url: str,
    type_: str,
    recipients: dict[str, Any],
    data: dict[str, Any],
    message: str,
) -> None:
    await setup(db, db_url)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        await accept(db, type_, recipients, data)
    assert (await (await db.execute("SELECT count(*) FROM events")).fetchone()) == (0,)


async def test_parallel_workers_cover_everyone_once_and_retake_a_dead_workers_chunk(
    db: Conn, db_url: str
) -> None:
    await setup(db, db_url)
    for n in range(50):
        await add_user(db, f"u{n:02}", email=f"u{n}@x.test")
    event_id, _, _ = await accept(db, "new_episode", {"all": True}, EPISODE)
    # A worker claimed the first chunk and died before materializing it.
    cur = await db.execute(q("claim_chunk"), {"event_id": event_id, "chunk": 7})
    assert await cur.fetchone() == ("", "u06")
    covered, done = await materialize_parallel(db_url, event_id, chunk=7, workers=3)
    assert (covered, done) == (50, True)
    cur = await db.execute("SELECT count(*), count(DISTINCT user_id) FROM notifications")
    assert await cur.fetchone() == (50, 50)
    cur = await db.execute("SELECT status, notified FROM events")
    assert await cur.fetchone() == ("done", 50)
    cur = await db.execute("SELECT count(*), sum(covered) FROM event_chunks")
    assert await cur.fetchone() == (8, 50)
    # Nothing is left: another run finds nothing to claim and adds nothing.
    assert await materialize_parallel(db_url, event_id, chunk=7) == (0, True)
    cur = await db.execute("SELECT count(*) FROM outbox")
    assert await cur.fetchone() == (100,)


async def test_a_chunk_held_by_a_live_worker_is_not_taken_twice(db: Conn, db_url: str) -> None:
    await setup(db, db_url)
    for n in range(10):
        await add_user(db, f"u{n}", email=f"u{n}@x.test")
    event_id, _, _ = await accept(db, "new_episode", {"all": True}, EPISODE)
    cur = await db.execute(q("claim_chunk"), {"event_id": event_id, "chunk": 100})
    claimed = await cur.fetchone()
    assert claimed == ("", "u9")
    async with await psycopg.AsyncConnection.connect(db_url) as busy:
        # A live worker is materializing it: its transaction holds the chunk's row.
        await busy.execute("SELECT 1 FROM event_chunks WHERE event_id = %s FOR UPDATE", (event_id,))
        # Another worker finds nothing to claim rather than waiting for it.
        cur = await db.execute(q("claim_chunk"), {"event_id": event_id, "chunk": 100})
        assert await cur.fetchone() is None
        cur = await db.execute(q("finish_event"), {"event_id": event_id})
        assert await cur.fetchone() == (False,)
        await busy.rollback()
    covered, done = await materialize_parallel(db_url, event_id, chunk=100)
    assert (covered, done) == (10, True)


async def test_on_the_cluster_a_chunk_is_written_on_every_shard_at_once(
    db: Conn, db_url: str, request: pytest.FixtureRequest
) -> None:
    """Citus runs the chunk's INSERT ... SELECTs on the workers, one task per shard, none
    through the coordinator (the plans it made, as auto_explain reports them)."""
    if not request.config.getoption("--citus"):
        pytest.skip("the cluster's plans (--citus)")
    await setup(db, db_url)
    for n in range(60):
        await add_user(db, f"u{n:02}", email=f"u{n}@x.test", devices=n % 2, topics=("s-1",))
    event_id, _, _ = await accept(db, "new_episode", {"topic": "s-1"}, EPISODE)
    async with coordinator_plans(db) as plans:
        assert await materialize_event(db, event_id, chunk=1000) == 60
    assert not_pushed_down(plans, "INSERT INTO notifications") == []
    assert not_pushed_down(plans, "INSERT INTO outbox") == []
    cur = await db.execute("SELECT count(*), count(DISTINCT id) FROM outbox")
    assert await cur.fetchone() == (150, 150)  # inbox and email each, push for 30
