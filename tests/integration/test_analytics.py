"""The analysts' views (docs/analytics.md): exact numbers on a small dataset computed by
hand, their columns pinned, the page's column tables in step with the database, and every
example query of the page running."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg.rows import dict_row

from service.config.base import ROOT

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

DOC = ROOT / "docs" / "analytics.md"

# Attempts, per row: promotions' hour 10:00 UTC has row 1 (a retry, then delivered), row
# 2 (delivered), row 3 (refused: failed) and row 4 (a retry, then dead); row 5 is
# delivered at 11:00:00 sharp, the next hour. email's only attempt is a retry. The outbox
# rows themselves are not seeded: each attempt takes the bucket of an ordering key 'k'.
ATTEMPTS: LiteralString = """
INSERT INTO delivery_attempts
       (outbox_id, attempt, consumer, started_at, duration_ms, outcome, status_code, bucket)
SELECT outbox_id, attempt, consumer, started_at::timestamptz, duration_ms, outcome,
       status_code, subject_bucket('k')
FROM (VALUES (1, 1, 'promotions', '2024-03-04 10:05:00+00', 100, 'retry', 503),
             (1, 2, 'promotions', '2024-03-04 10:10:00+00', 20, 'delivered', 200),
             (2, 1, 'promotions', '2024-03-04 10:20:00+00', 40, 'delivered', 200),
             (3, 1, 'promotions', '2024-03-04 10:30:00+00', 30, 'failed', 400),
             (4, 1, 'promotions', '2024-03-04 10:40:00+00', 200, 'retry', NULL),
             (4, 2, 'promotions', '2024-03-04 10:59:59.999+00', 10, 'dead', 503),
             (5, 1, 'promotions', '2024-03-04 11:00:00+00', 50, 'delivered', 200),
             (6, 1, 'email', '2024-03-04 10:15:00+00', 5, 'retry', NULL))
     AS a (outbox_id, attempt, consumer, started_at, duration_ms, outcome, status_code);
"""

# Seen rows of the consumer promotions: delivered 2 s, 4 s and (requeued) an hour after
# arrival in hour 10, 2 s after in hour 11 (arrived in hour 10); one pending and one dead
# row that never arrived. No attempts: the deliveries view must not see these rows.
SEEN_ROWS: LiteralString = """
INSERT INTO outbox (id, kind, consumer, ordering_key, payload, status, created_at,
                    delivered_at, requeued_at, bucket)
SELECT id, 'seen', 'promotions', ordering_key, '{}', status, created_at::timestamptz,
       delivered_at::timestamptz, requeued_at::timestamptz, subject_bucket(ordering_key)
FROM (VALUES (101, 'client:u1', 'delivered',
              '2024-03-04 10:00:00+00', '2024-03-04 10:00:02+00', NULL),
             (102, 'client:u2', 'delivered',
              '2024-03-04 10:10:00+00', '2024-03-04 10:10:04+00', NULL),
             (103, 'client:u1', 'delivered',
              '2024-03-04 09:59:00+00', '2024-03-04 10:59:00+00', '2024-03-04 10:58:00+00'),
             (104, 'client:u3', 'pending',
              '2024-03-04 10:30:00+00', NULL, NULL),
             (105, 'client:u3', 'dead',
              '2024-03-04 10:20:00+00', NULL, NULL),
             (106, 'client:u2', 'delivered',
              '2024-03-04 10:59:59+00', '2024-03-04 11:00:01+00', NULL))
     AS r (id, ordering_key, status, created_at, delivered_at, requeued_at);
"""

# new_episode on 2024-03-04 (n1-n6), and on 03-05 at midnight UTC (n7); a receipt of an
# erased user (n8). Channels: n1 email+push sent; n2 email refused, push sent; n3 email
# dead, push never queued (no device); n4 email held by quiet hours, push switched off; n5
# email expired, push sent; n6 push sent and its sms escalation dropped as seen.
NOTIFICATIONS: LiteralString = """
INSERT INTO notifications (id, event_id, user_id, type, category, suppressed, created_at,
                           bucket)
OVERRIDING SYSTEM VALUE
SELECT id, gen_random_uuid(), user_id, type, category, suppressed::jsonb,
       created_at::timestamptz, user_bucket(coalesce(user_id, 'erased'))
FROM (VALUES (1, 'u1', 'new_episode', 'marketing', NULL, '2024-03-04 08:00+00'),
             (2, 'u2', 'new_episode', 'marketing', NULL, '2024-03-04 08:00+00'),
             (3, 'u3', 'new_episode', 'marketing', '{"push": "no_contact"}',
              '2024-03-04 08:00+00'),
             (4, 'u4', 'new_episode', 'marketing', '{"push": "preference"}',
              '2024-03-04 08:00+00'),
             (5, 'u5', 'new_episode', 'marketing', NULL, '2024-03-04 08:00+00'),
             (6, 'u6', 'new_episode', 'marketing', NULL, '2024-03-04 23:30+00'),
             (7, 'u1', 'new_episode', 'marketing', NULL, '2024-03-05 00:00+00'),
             (8, NULL, 'payment_receipt', 'receipts', NULL, '2024-03-04 09:00+00'))
     AS v (id, user_id, type, category, suppressed, created_at);
INSERT INTO outbox (kind, consumer, ordering_key, payload, status, reason, notification_id,
                    created_at, delivered_at, bucket)
SELECT 'notification', channel, 'u', payload::jsonb, status, reason, n, '2024-03-04 08:00+00',
       CASE WHEN status = 'delivered' THEN timestamptz '2024-03-06 09:00+00' END,
       (SELECT nn.bucket FROM notifications AS nn WHERE nn.id = v.n)
FROM (VALUES (1, 'email', 'delivered', NULL, '{}'), (1, 'push', 'delivered', NULL, '{}'),
             (2, 'email', 'failed', NULL, '{}'), (2, 'push', 'delivered', NULL, '{}'),
             (3, 'email', 'dead', NULL, '{}'),
             (4, 'email', 'pending', 'quiet_hours', '{}'),
             (5, 'email', 'suppressed', 'expired', '{}'), (5, 'push', 'delivered', NULL, '{}'),
             (6, 'push', 'delivered', NULL, '{}'),
             (6, 'sms', 'suppressed', 'seen', '{"escalation": true}'),
             (7, 'email', 'delivered', NULL, '{}'),
             (8, 'email', 'delivered', NULL, '{}'))
     AS v (n, channel, status, reason, payload);
"""

# promotions marks on 03-04 (four, by two subjects, of three items; the last a second
# before midnight UTC) and 03-05 (one, at midnight). On 03-06 the users mark notifications
# with the seen tag: n1, n3 (its email was never delivered), n5, n6 (the mark has expired
# but is not purged yet); n2 only by another user, with another tag, and with the tag
# inbox_seen (a deployment whose seen tag that is).
MARKS: LiteralString = """
INSERT INTO seen_marks (tag, item_id, subject_key, subject_kind, subject, seen_at, expires_at,
                        bucket)
SELECT tag, item, subject, 'client', '{}', seen_at::timestamptz, expires::timestamptz,
       subject_bucket(subject)
FROM (VALUES ('promotions', 'p1', 'client:u1', '2024-03-04 09:00+00', '2099-01-01+00'),
             ('promotions', 'p1', 'client:u2', '2024-03-04 12:00+00', '2099-01-01+00'),
             ('promotions', 'p2', 'client:u1', '2024-03-04 15:00+00', '2099-01-01+00'),
             ('promotions', 'p3', 'client:u2', '2024-03-04 23:59:59+00', '2099-01-01+00'),
             ('promotions', 'p3', 'client:u3', '2024-03-05 00:00:00+00', '2099-01-01+00'),
             ('notifications', '1', 'client:u1', '2024-03-06 10:00+00', '2099-01-01+00'),
             ('notifications', '3', 'client:u3', '2024-03-06 10:00+00', '2099-01-01+00'),
             ('notifications', '5', 'client:u5', '2024-03-06 10:00+00', '2099-01-01+00'),
             ('notifications', '6', 'client:u6', '2024-03-06 10:00+00', '2024-03-07+00'),
             ('notifications', '2', 'client:u9', '2024-03-06 10:00+00', '2099-01-01+00'),
             ('promotions', '2', 'client:u2', '2024-03-06 10:00+00', '2099-01-01+00'),
             ('inbox_seen', '2', 'client:u2', '2024-03-06 10:00+00', '2099-01-01+00'))
     AS marks (tag, item, subject, seen_at, expires);
"""

# Configured: channels email, push, sms (and a disabled one); categories marketing (sms
# off by default), receipts (transactional) and a disabled one. Six users set
# preferences: u1 email off and push on for marketing; u2 muted, marketing email off; u3
# marketing sms on, receipts email off; u4 quiet hours only and a null switch; u5 muted;
# u6 a switch of a category that is no longer configured. u7 never set any.
PREFERENCES: LiteralString = """
INSERT INTO notify_channels (name, kind, enabled)
VALUES ('email', 'email', true), ('push', 'push', true), ('sms', 'sms', true),
       ('old_inbox', 'inbox', false);
INSERT INTO notify_categories (name, transactional, defaults, enabled)
VALUES ('marketing', false, '{"sms": false}', true), ('receipts', true, '{}', true),
       ('retired', false, '{}', false);
INSERT INTO users (id) SELECT 'u' || n FROM generate_series(1, 7) AS n;
INSERT INTO preferences (user_id, muted, channels, quiet_hours)
VALUES ('u1', false, '{"marketing": {"email": false, "push": true}}', '{}'),
       ('u2', true, '{"marketing": {"email": false}}', '{}'),
       ('u3', false, '{"marketing": {"sms": true}, "receipts": {"email": false}}', '{}'),
       ('u4', false, '{"marketing": {"push": null}}',
        '{"email": {"start": "22:00", "end": "08:00"}}'),
       ('u5', true, '{}', '{}'),
       ('u6', false, '{"legacy": {"email": false}}', '{}');
"""

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "analytics_deliveries_hourly": [
        ("hour", "timestamp with time zone"),
        ("consumer", "text"),
        ("attempts", "bigint"),
        ("delivered", "bigint"),
        ("retried", "bigint"),
        ("failed", "bigint"),
        ("dead", "bigint"),
        ("ended", "bigint"),
        ("success_rate", "double precision"),
        ("p50_ms", "double precision"),
        ("p95_ms", "double precision"),
    ],
    "analytics_seen_daily": [
        ("day", "date"),
        ("tag", "text"),
        ("new_marks", "bigint"),
        ("subjects", "bigint"),
        ("items", "bigint"),
    ],
    "analytics_seen_to_delivered": [
        ("hour", "timestamp with time zone"),
        ("consumer", "text"),
        ("delivered", "bigint"),
        ("p50_seconds", "double precision"),
        ("p95_seconds", "double precision"),
        ("max_seconds", "double precision"),
        ("requeued", "bigint"),
    ],
    "analytics_notification_decisions": [
        ("notification_id", "bigint"),
        ("event_type", "text"),
        ("created_at", "timestamp with time zone"),
        ("channel", "text"),
        ("status", "text"),
        ("reason", "text"),
        ("queued", "boolean"),
        ("seen", "boolean"),
    ],
    "analytics_notification_funnel": [
        ("day", "date"),
        ("event_type", "text"),
        ("channel", "text"),
        ("queued", "bigint"),
        ("pending", "bigint"),
        ("sent", "bigint"),
        ("failed", "bigint"),
        ("dead", "bigint"),
        ("suppressed", "bigint"),
        ("not_queued", "bigint"),
        ("seen", "bigint"),
        ("sent_rate", "double precision"),
        ("seen_rate", "double precision"),
    ],
    "analytics_notification_suppressions": [
        ("day", "date"),
        ("event_type", "text"),
        ("channel", "text"),
        ("queued", "boolean"),
        ("reason", "text"),
        ("notifications", "bigint"),
    ],
    "analytics_preference_optouts": [
        ("category", "text"),
        ("channel", "text"),
        ("transactional", "boolean"),
        ("default_on", "boolean"),
        ("users_with_preferences", "bigint"),
        ("switched_on", "bigint"),
        ("switched_off", "bigint"),
        ("opt_out_rate", "double precision"),
        ("muted", "bigint"),
        ("silenced", "bigint"),
    ],
}


@pytest.fixture
async def analyst(db: Conn) -> AsyncIterator[Conn]:
    """The seeded database, as an analyst in India sees it: a zone half an hour off UTC
    moves both hour and day boundaries, so only UTC buckets give the numbers below."""
    for seed in (ATTEMPTS, SEEN_ROWS, NOTIFICATIONS, MARKS, PREFERENCES):
        await db.execute(seed)
    await db.execute("SET TimeZone = 'Asia/Kolkata'")
    yield db


async def rows(db: Conn, query: LiteralString) -> list[dict[str, Any]]:
    async with db.cursor(row_factory=dict_row) as cur:
        await cur.execute(query)
        return await cur.fetchall()


def utc(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, 4, hour, minute, tzinfo=UTC)


async def test_deliveries_per_consumer_and_hour(analyst: Conn) -> None:
    got = await rows(analyst, "SELECT * FROM analytics_deliveries_hourly ORDER BY hour, consumer")
    assert got == [
        {
            "hour": utc(10),
            "consumer": "email",
            "attempts": 1,
            "delivered": 0,
            "retried": 1,
            "failed": 0,
            "dead": 0,
            "ended": 0,
            "success_rate": None,  # nothing ended: no rate, rather than 0 %
            "p50_ms": 5.0,
            "p95_ms": 5.0,
        },
        {
            "hour": utc(10),
            "consumer": "promotions",
            "attempts": 6,
            "delivered": 2,
            "retried": 2,
            "failed": 1,
            "dead": 1,
            "ended": 4,
            "success_rate": 0.5,  # 2 delivered of 4 rows decided
            # 10 20 30 40 100 200 ms: p50 halfway between 30 and 40; p95 at rank 5.75 of
            # 6, three quarters of the way from 100 to 200.
            "p50_ms": pytest.approx(35.0),
            "p95_ms": pytest.approx(175.0),
        },
        {
            "hour": utc(11),
            "consumer": "promotions",
            "attempts": 1,
            "delivered": 1,
            "retried": 0,
            "failed": 0,
            "dead": 0,
            "ended": 1,
            "success_rate": 1.0,
            "p50_ms": 50.0,
            "p95_ms": 50.0,
        },
    ]


async def test_seen_marks_per_tag_and_day(analyst: Conn) -> None:
    got = await rows(analyst, "SELECT * FROM analytics_seen_daily ORDER BY day, tag")
    assert [tuple(r.values()) for r in got] == [
        # day, tag, new_marks, subjects, items
        (date(2024, 3, 4), "promotions", 4, 2, 3),  # 23:59:59 UTC is still the 4th
        (date(2024, 3, 5), "promotions", 1, 1, 1),
        (date(2024, 3, 6), "inbox_seen", 1, 1, 1),
        (date(2024, 3, 6), "notifications", 5, 5, 5),
        (date(2024, 3, 6), "promotions", 1, 1, 1),
    ]


async def test_seconds_from_mark_to_consumer(analyst: Conn) -> None:
    got = await rows(analyst, "SELECT * FROM analytics_seen_to_delivered ORDER BY hour, consumer")
    assert got == [
        {
            "hour": utc(10),
            "consumer": "promotions",
            "delivered": 3,
            # 2, 4 and 3600 s: p95 at rank 2.9 of 3, 0.9 of the way from 4 to 3600.
            "p50_seconds": pytest.approx(4.0),
            "p95_seconds": pytest.approx(4 + 0.9 * 3596),
            "max_seconds": 3600.0,
            "requeued": 1,
        },
        {
            "hour": utc(11),
            "consumer": "promotions",
            "delivered": 1,
            "p50_seconds": 2.0,
            "p95_seconds": 2.0,
            "max_seconds": 2.0,
            "requeued": 0,
        },
    ]


FUNNEL: LiteralString = """
SELECT day, event_type, channel, queued, pending, sent, failed, dead, suppressed,
       not_queued, seen, sent_rate, seen_rate
FROM analytics_notification_funnel ORDER BY day, event_type, channel
"""


async def test_notification_funnel(analyst: Conn) -> None:
    got = [tuple(r.values()) for r in await rows(analyst, FUNNEL)]
    d4, d5 = date(2024, 3, 4), date(2024, 3, 5)
    assert got == [
        # queued, pending, sent, failed, dead, suppressed, not_queued, seen, rates
        (d4, "new_episode", "email", 5, 1, 1, 1, 1, 1, 0, 1, 0.2, 1.0),
        # n1, n5, n6 seen (n6's mark expired, not purged); n2 only by others
        (d4, "new_episode", "push", 4, 0, 4, 0, 0, 0, 2, 3, 1.0, 0.75),
        (d4, "new_episode", "sms", 1, 0, 0, 0, 0, 1, 0, 0, 0.0, None),
        (d4, "payment_receipt", "email", 1, 0, 1, 0, 0, 0, 0, 0, 1.0, 0.0),
        (d5, "new_episode", "email", 1, 0, 1, 0, 0, 0, 0, 0, 1.0, 0.0),
    ]


async def test_funnel_follows_the_configured_seen_tag(analyst: Conn) -> None:
    await analyst.execute("SET mark_notify.seen_tag = 'inbox_seen'")
    seen = await rows(
        analyst,
        "SELECT channel, seen FROM analytics_notification_funnel"
        " WHERE day = '2024-03-04' AND event_type = 'new_episode' ORDER BY channel",
    )
    assert [(r["channel"], r["seen"]) for r in seen] == [("email", 0), ("push", 1), ("sms", 0)]

    await analyst.execute("RESET mark_notify.seen_tag")
    again = await rows(
        analyst,
        "SELECT sum(seen) AS seen FROM analytics_notification_funnel WHERE day = '2024-03-04'",
    )
    assert again == [{"seen": 4}]  # the default, 'notifications'


async def test_why_deliveries_were_not_sent(analyst: Conn) -> None:
    got = await rows(
        analyst,
        "SELECT * FROM analytics_notification_suppressions"
        " ORDER BY day, event_type, channel, reason",
    )
    assert [tuple(r.values()) for r in got] == [
        (date(2024, 3, 4), "new_episode", "email", True, "expired", 1),
        (date(2024, 3, 4), "new_episode", "push", False, "no_contact", 1),
        (date(2024, 3, 4), "new_episode", "push", False, "preference", 1),
        (date(2024, 3, 4), "new_episode", "sms", True, "seen", 1),
    ]
    one = await rows(
        analyst,
        "SELECT channel, status, reason, queued, seen FROM analytics_notification_decisions"
        " WHERE notification_id = 3 ORDER BY channel",
    )
    assert [tuple(r.values()) for r in one] == [
        ("email", "dead", None, True, False),  # marked seen, but never delivered
        ("push", "suppressed", "no_contact", False, False),
    ]


async def test_preference_opt_outs(analyst: Conn) -> None:
    got = await rows(
        analyst, "SELECT * FROM analytics_preference_optouts ORDER BY category, channel"
    )
    assert [tuple(r.values()) for r in got] == [
        # transactional, default_on, with preferences, on, off, opt-out rate, muted,
        # silenced (muted, or switched off and not muted)
        ("legacy", "email", None, None, 6, 0, 1, pytest.approx(1 / 6), 2, 3),
        ("marketing", "email", False, True, 6, 0, 2, pytest.approx(2 / 6), 2, 3),
        ("marketing", "push", False, True, 6, 1, 0, 0.0, 2, 2),
        ("marketing", "sms", False, False, 6, 1, 0, 0.0, 2, 2),
        # a transactional category reaches everyone, whatever they switched
        ("receipts", "email", True, True, 6, 0, 1, pytest.approx(1 / 6), 2, 0),
        ("receipts", "push", True, True, 6, 0, 0, 0.0, 2, 0),
        ("receipts", "sms", True, True, 6, 0, 0, 0.0, 2, 0),
    ]


async def view_columns(db: Conn) -> dict[str, list[tuple[str, str]]]:
    cur = await db.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name LIKE 'analytics%'"
        " ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[tuple[str, str]]] = {}
    for view, column, data_type in await cur.fetchall():
        found.setdefault(view, []).append((column, data_type))
    return found


async def test_columns_are_pinned(db: Conn) -> None:
    """Analysts' saved queries rely on these: a change here is a change of contract."""
    assert await view_columns(db) == COLUMNS


def documented_columns() -> dict[str, list[tuple[str, str]]]:
    """Each `## view` section's table of `| column | type | meaning |` rows."""
    found: dict[str, list[tuple[str, str]]] = {}
    for section in re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        if title.startswith("analytics_"):
            found[title.strip()] = re.findall(r"^\| `(\w+)` \| ([a-z ]+) \|", body, re.MULTILINE)
    return found


async def test_the_page_documents_every_column(db: Conn) -> None:
    assert documented_columns() == await view_columns(db)


def example_queries() -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


async def test_every_example_query_runs(analyst: Conn) -> None:
    examples = example_queries()
    assert {v for v in COLUMNS if any(v in q for q in examples)} == set(COLUMNS)
    for query in examples:
        # bytes: the query is read from the page, not a literal in this file.
        await analyst.execute(query.encode())
