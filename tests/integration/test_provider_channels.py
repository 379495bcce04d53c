"""SMS and push channels end to end: events accepted through SQL, a running dispatcher, and
real provider apps on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from service.config.load import Config
from service.notify.catalog import sync_catalog
from service.notify.templates import load_templates
from service.seen.store import MarkRow, record_marks
from service.sql import q
from service.wire import ClientSubject
from tests.consumers import running, wait_until
from tests.providers import Providers, serving_providers
from tests.support import make_config, notify_data

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

RECEIPT = {"amount": "9.99", "currency": "EUR", "order_id": "o-1", "paid_at": "today"}
RECEIPT_SMS = "Payment of 9.99 EUR received, order o-1."
EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}


@pytest.fixture
async def providers() -> AsyncIterator[tuple[Providers, str]]:
    async with serving_providers() as peers:
        yield peers


async def setup(db: Conn, db_url: str, base: str) -> Config:
    data = notify_data(providers_url=base)
    # No recipient here has an address; the SMTP channel is not under test.
    data["channels"]["email"]["enabled"] = False
    config = make_config(db_url, dispatcher={"sweep_interval": 0.2}, **data)
    await sync_catalog(db, config, load_templates(config))
    return config


async def add_user(
    db: Conn, user_id: str, *, phone: str | None = None, tokens: tuple[str, ...] = ()
) -> None:
    await db.execute("INSERT INTO users (id, phone) VALUES (%s, %s)", (user_id, phone))
    for token in tokens:
        await db.execute(
            "INSERT INTO push_devices (user_id, token, platform) VALUES (%s, %s, 'ios')",
            (user_id, token),
        )


async def accept(db: Conn, type_: str, user_ids: list[str], data: dict[str, Any]) -> None:
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": "billing",
            "idempotency_key": f"{type_}-1",
            "type": type_,
            "recipients": json.dumps({"user_ids": user_ids}),
            "data": json.dumps(data),
            "send_at": None,
            "chunk": 1000,
        },
    )
    row = await cur.fetchone()
    assert row is not None and row[1] == "done"


async def rows(db: Conn, channel: str) -> dict[str, tuple[str, str | None]]:
    """user -> (status, reason) of the channel's outbox rows."""
    cur = await db.execute(
        "SELECT n.user_id, o.status, o.reason FROM outbox o"
        " JOIN notifications n ON n.id = o.notification_id WHERE o.consumer = %s",
        (channel,),
    )
    return {u: (s, r) for u, s, r in await cur.fetchall()}


async def attempts(db: Conn, channel: str) -> list[tuple[str, int, str, str | None, int | None]]:
    cur = await db.execute(
        "SELECT n.user_id, a.attempt, a.outcome, a.provider, a.status_code"
        " FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id"
        " JOIN notifications n ON n.id = o.notification_id"
        " WHERE o.consumer = %s ORDER BY n.user_id, a.attempt",
        (channel,),
    )
    return list(await cur.fetchall())


async def escalate_now(db: Conn) -> None:
    # The escalation is owed 600 s after the event; the test does not wait that long.
    await db.execute("UPDATE outbox SET next_attempt_at = now() WHERE consumer = 'sms'")


async def test_an_escalation_sms_fails_over_and_the_attempt_names_the_fallback(
    db: Conn, db_url: str, providers: tuple[Providers, str]
) -> None:
    peers, base = providers
    peers.status["sms-primary"] = 503
    config = await setup(db, db_url, base)
    await add_user(db, "anna", phone="+4915112345678")
    await accept(db, "payment_receipt", ["anna"], RECEIPT)
    async with running(config, db_url):
        await escalate_now(db)

        async def sent() -> bool:
            return (await rows(db, "sms"))["anna"][0] != "pending"

        await wait_until(sent, 10, "the escalation sms")
    assert await rows(db, "sms") == {"anna": ("delivered", None)}
    assert await attempts(db, "sms") == [("anna", 1, "delivered", "sms-fallback", 200)]
    assert [s.provider for s in peers.sent] == ["sms-primary", "sms-fallback"]
    fallback = peers.to("sms-fallback")[0]
    assert fallback.verified
    assert (fallback.body["to"], fallback.body["text"]) == ("+4915112345678", RECEIPT_SMS)
    cur = await db.execute("SELECT event_id::text FROM outbox WHERE consumer = 'sms'")
    assert (await cur.fetchone()) == (fallback.webhook_id,)


async def test_a_push_token_answered_410_is_forgotten(
    db: Conn, db_url: str, providers: tuple[Providers, str]
) -> None:
    peers, base = providers
    peers.by_token["tok-dead"] = 410
    config = await setup(db, db_url, base)
    await add_user(db, "anna", tokens=("tok-dead", "tok-live"))
    await accept(db, "new_episode", ["anna"], EPISODE)

    async def devices() -> list[str]:
        cur = await db.execute("SELECT token FROM push_devices ORDER BY token")
        return [t for (t,) in await cur.fetchall()]

    async with running(config, db_url):

        async def forgotten() -> bool:
            return (await rows(db, "push"))["anna"][0] != "pending" and await devices() == [
                "tok-live"
            ]

        await wait_until(forgotten, 10, "the push and the removal of the dead token")
    assert await rows(db, "push") == {"anna": ("delivered", None)}
    assert await attempts(db, "push") == [("anna", 1, "delivered", "push-primary", 200)]
    assert sorted(s.body["token"] for s in peers.sent) == ["tok-dead", "tok-live"]


async def test_the_escalation_sms_is_sent_only_to_whoever_has_not_seen_the_notification(
    db: Conn, db_url: str, providers: tuple[Providers, str]
) -> None:
    peers, base = providers
    config = await setup(db, db_url, base)
    await add_user(db, "anna", phone="+4915100000001")
    await add_user(db, "ben", phone="+4915100000002")
    await accept(db, "payment_receipt", ["anna", "ben"], RECEIPT)
    cur = await db.execute("SELECT id FROM notifications WHERE user_id = 'anna'")
    row = await cur.fetchone()
    assert row is not None
    # Anna saw hers in the app: a mark through the real seen write path.
    await record_marks(
        db,
        [
            MarkRow(
                tag="notifications",
                item_id=str(row[0]),
                subject_key="client:anna",
                subject_kind="client",
                subject=ClientSubject(user_id="anna"),
                consumer=None,
                remember_for_s=3600,
            )
        ],
    )
    async with running(config, db_url):
        await escalate_now(db)

        async def settled() -> bool:
            return all(status != "pending" for status, _ in (await rows(db, "sms")).values())

        await wait_until(settled, 10, "both escalation rows to settle")
    assert await rows(db, "sms") == {"anna": ("suppressed", "seen"), "ben": ("delivered", None)}
    assert [(s.provider, s.body["to"]) for s in peers.sent] == [("sms-primary", "+4915100000002")]
    assert await attempts(db, "sms") == [("ben", 1, "delivered", "sms-primary", 200)]
