"""Operators' switches: a paused consumer's rows wait and go on resume; a provider switched
off is skipped in the failover; every change leaves its audit row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from dispatcher import outbox
from dispatcher.provider_transport import ProviderTransport
from dispatcher.transport_base import Delivery
from service.config.core import DatabaseSettings
from service.config.load import Config
from service.config.notify import Channel
from service.database import make_pool
from service.notify.catalog import sync_catalog
from service.notify.templates import load_templates
from service.ops import controls
from service.sql import q
from tests.consumers import (
    RecordingConsumer,
    add_marks,
    client,
    dispatch_config,
    http_consumer,
    outbox_status,
    running,
    scalar,
    wait_until,
)
from tests.providers import Providers, serving_providers
from tests.support import all_buckets, make_config, notify_data, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

PHONE = "+4915112345678"
RECEIPT = {"amount": "9.99", "currency": "EUR", "order_id": "o-1", "paid_at": "today"}


@pytest.fixture
async def providers() -> AsyncIterator[tuple[Providers, str]]:
    async with serving_providers() as peers:
        yield peers


async def audit_rows(db: Conn) -> list[tuple[Any, ...]]:
    cur = await db.execute("SELECT actor, action, target, before, after FROM audit_log ORDER BY id")
    return list(await cur.fetchall())


async def test_a_paused_consumer_keeps_new_marks_pending_until_it_is_resumed(
    db: Conn, db_url: str
) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        # A sweep far longer than the test: after the resume only its wake-up explains a
        # prompt delivery.
        config = dispatch_config(
            db_url,
            {"promotions": http_consumer(f"{base}/seen")},
            dispatcher={"sweep_interval": 600},
        )
        paused = await controls.pause(db, "promotions", "ops-anna", "consumer is migrating")
        assert (paused.paused, paused.reason, paused.changed_by) == (
            True,
            "consumer is migrating",
            "ops-anna",
        )
        async with running(config, db_url):
            await add_marks(db, "promotions", "promotions", [(client("u1"), "promo-1")])
            await asyncio.sleep(1.0)  # the mark's wake-up came and went
            assert await outbox_status(db) == {"pending": 1}
            assert consumer.requests == []
            attempts = await scalar(db, "SELECT count(*) FROM delivery_attempts")
            assert attempts == 0

            await controls.resume(db, "promotions", "ops-ben")

            async def delivered() -> bool:
                return await outbox_status(db) == {"delivered": 1}

            took = await wait_until(delivered, 10, "delivery after the resume")
            assert took < 5
    assert len(consumer.accepted) == 1

    assert await controls.paused_consumers(db) == set()
    state = (await controls.consumer_controls(db))["promotions"]
    assert (state.paused, state.changed_by, state.reason) == (False, "ops-ben", None)
    assert await audit_rows(db) == [
        (
            "ops-anna",
            "consumer.pause",
            "promotions",
            {"paused": False, "reason": None},
            {"paused": True, "reason": "consumer is migrating"},
        ),
        (
            "ops-ben",
            "consumer.resume",
            "promotions",
            {"paused": True, "reason": "consumer is migrating"},
            {"paused": False, "reason": None},
        ),
    ]


async def test_every_claim_of_seen_rows_skips_a_paused_consumer(db: Conn, db_url: str) -> None:
    await add_marks(db, "promotions", "promotions", [(client("u1"), "a"), (client("u2"), "b")])
    await add_marks(db, "goals", "promotions", [(client("u1"), "c")])
    ids = [r[0] for r in await (await db.execute("SELECT id FROM outbox ORDER BY id")).fetchall()]
    await controls.pause(db, "promotions", "ops-anna")
    pool = make_pool(db_url, DatabaseSettings(pool_min=1, pool_max=2), name="test-claims")
    await pool.open(wait=True)
    try:

        async def claim(consumer: str, ordered: bool) -> list[int]:
            batch = await outbox.claim(
                pool,
                consumer,
                limit=10,
                lease_s=30,
                dispatcher="t",
                buckets=await all_buckets(db),
                ordered=ordered,
            )
            return [d.outbox_id for d in batch]

        assert await claim("promotions", False) == []
        assert await claim("promotions", True) == []
        by_id = await outbox.claim_ids(pool, "promotions", ids, lease_s=30, dispatcher="t")
        # Another consumer's rows go as ever.
        assert [d.outbox_id for d in by_id] == [ids[2]]

        await controls.resume(db, "promotions", "ops-anna")
        assert await claim("promotions", True) == ids[:2]
    finally:
        await pool.close()


async def setup_channels(db: Conn, db_url: str, base: str) -> Config:
    data = notify_data(providers_url=base)
    data["channels"]["email"]["enabled"] = False
    config = make_config(db_url, dispatcher={"sweep_interval": 0.2}, **data)
    await sync_catalog(db, config, load_templates(config))
    return config


async def sms_rows(db: Conn) -> list[tuple[str, str | None]]:
    cur = await db.execute(
        "SELECT o.status, a.provider FROM outbox o"
        " LEFT JOIN delivery_attempts a ON a.outbox_id = o.id WHERE o.consumer = 'sms'"
    )
    return list(await cur.fetchall())


async def test_a_provider_switched_off_is_skipped_and_a_paused_channel_waits(
    db: Conn, db_url: str, providers: tuple[Providers, str]
) -> None:
    peers, base = providers
    config = await setup_channels(db, db_url, base)
    await db.execute("INSERT INTO users (id, phone) VALUES ('anna', %s)", [PHONE])
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": "billing",
            "idempotency_key": "receipt-1",
            "type": "payment_receipt",
            "recipients": json.dumps({"user_ids": ["anna"]}),
            "data": json.dumps(RECEIPT),
            "send_at": None,
            "chunk": 1000,
        },
    )
    assert (await cur.fetchone()) is not None
    switched = await controls.set_provider(db, "sms", "sms-primary", False, "ops-anna")
    assert (switched.enabled, switched.changed_by) == (False, "ops-anna")
    await controls.pause(db, "sms", "ops-anna", "provider contract renewal")
    async with running(config, db_url):
        # The escalation is owed 600 s after the event; the test does not wait that long.
        await db.execute("UPDATE outbox SET next_attempt_at = now() WHERE consumer = 'sms'")
        await asyncio.sleep(1.0)  # five sweeps
        assert await sms_rows(db) == [("pending", None)]
        assert [s for s in peers.sent if s.provider.startswith("sms")] == []

        await controls.resume(db, "sms", "ops-anna")

        async def sent() -> bool:
            return (await sms_rows(db))[0][0] != "pending"

        await wait_until(sent, 10, "the sms after the resume")
    # The healthy primary was never asked: the operator had switched it off.
    assert await sms_rows(db) == [("delivered", "sms-fallback")]
    assert [s.provider for s in peers.sent if s.provider.startswith("sms")] == ["sms-fallback"]

    assert await controls.disabled_providers(db) == {("sms", "sms-primary")}
    await controls.set_provider(db, "sms", "sms-primary", True, "ops-ben")
    assert await controls.disabled_providers(db) == set()
    assert await audit_rows(db) == [
        ("ops-anna", "provider.disable", "sms/sms-primary", {"enabled": True}, {"enabled": False}),
        (
            "ops-anna",
            "consumer.pause",
            "sms",
            {"paused": False, "reason": None},
            {"paused": True, "reason": "provider contract renewal"},
        ),
        (
            "ops-anna",
            "consumer.resume",
            "sms",
            {"paused": True, "reason": "provider contract renewal"},
            {"paused": False, "reason": None},
        ),
        ("ops-ben", "provider.enable", "sms/sms-primary", {"enabled": False}, {"enabled": True}),
    ]


def sms(off: list[str]) -> Delivery:
    payload = {
        "notification_id": 1,
        "event_id": str(uuid.uuid4()),
        "type": "payment_receipt",
        "category": "billing",
        "transactional": True,
        "user_id": "anna",
        "locale": "en",
        "data": RECEIPT,
        "escalation": True,
        "email": None,
        "phone": PHONE,
        "devices": None,
        "providers_off": off,
    }
    return Delivery(1, str(uuid.uuid4()), "sms", "client:anna", payload, 1, datetime.now(UTC))


async def test_with_every_provider_switched_off_an_attempt_fails_as_in_an_outage(
    providers: tuple[Providers, str],
) -> None:
    peers, base = providers
    config = make_config("postgresql://127.0.0.1:9/unused", **notify_data(providers_url=base))
    channels: dict[str, Channel] = {
        n: c for n, c in config.channels.items() if c.transport == "provider"
    }
    sender = ProviderTransport(channels, load_templates(config))
    try:
        [outcome] = await sender.deliver("sms", [sms(["sms-fallback", "sms-primary"])])
        assert (outcome.kind, outcome.error) == (
            "retry",
            "every provider of channel sms is switched off",
        )
        assert peers.sent == []
        [outcome] = await sender.deliver("sms", [sms(["sms-fallback"])])
        assert (outcome.kind, outcome.provider) == ("delivered", "sms-primary")
    finally:
        await sender.close()
