"""KafkaTransport against a real broker (Tansu): message shape, keys, order, failures.

The broker checks every value against docs/kafka/<event type>.schema.json (Tansu's
schema registry, see tests/kafka_broker.py), so an accepted message is one that matches
the documented schema; the tests then read the topics back with an aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatcher.kafka_transport import KafkaTransport
from dispatcher.transport_base import Delivery, Outcome
from service.config.core import KafkaSettings
from service.config.seen import Consumer
from tests.consumers import patience
from tests.kafka_broker import TansuBroker, kafka_settings, read_topic

pytestmark = pytest.mark.kafka

KAFKA = Consumer(transport="kafka")
SEEN_AT = "2025-01-02T03:04:05.678901+00:00"


def client_payload(tag: str, item: str, user_id: str) -> dict[str, Any]:
    subject = {"user_id": user_id, "uid": f"uid-{user_id}", "bound_uids": ["b1"], "phone_id": None}
    return {"event_type": "client", "tag": tag, "id": item, "seen_at": SEEN_AT, "subject": subject}


def driver_payload(tag: str, item: str, db_id: str, driver: str) -> dict[str, Any]:
    subject = {"db_id": db_id, "uuid": driver}
    return {"event_type": "driver", "tag": tag, "id": item, "seen_at": SEEN_AT, "subject": subject}


def anonymous_payload(tag: str, item: str) -> dict[str, Any]:
    return {"event_type": "anonymous", "tag": tag, "id": item, "seen_at": SEEN_AT, "subject": {}}


def delivery(outbox_id: int, payload: dict[str, Any], key: str) -> Delivery:
    return Delivery(
        outbox_id=outbox_id,
        event_id=str(uuid.uuid4()),
        consumer="cashback",
        ordering_key=key,
        payload=payload,
        attempt=1,
        created_at=datetime.now(UTC),
    )


def mixed_batch(start: int = 1) -> list[Delivery]:
    """Interleaved marks of two clients, a driver and anonymous callers."""
    batch: list[Delivery] = []
    n = start
    for i in range(6):
        for user in ("user-1", "user-2"):
            batch.append(
                delivery(n, client_payload("cashback", f"offer-{i}", user), f"client:{user}")
            )
            n += 1
        if i % 2 == 0:
            batch.append(
                delivery(
                    n,
                    driver_payload("goals", f"goal-{i}", "park-1", "drv-1"),
                    "driver:park-1:drv-1",
                )
            )
            n += 1
        if i % 3 == 0:
            batch.append(
                delivery(
                    n, anonymous_payload("banners", f"banner-{i}"), f"anonymous:{uuid.uuid4().hex}"
                )
            )
            n += 1
    return batch


def expected_value(d: Delivery) -> dict[str, Any]:
    """The documented message for an outbox payload: the subject's fields inlined."""
    p = d.payload
    top = {"event_type": p["event_type"], "event_id": d.event_id, "tag": p["tag"], "id": p["id"]}
    subject: dict[str, Any] = p["subject"]
    return top | {"seen_at": p["seen_at"]} | subject


def kinds(outcomes: list[Outcome]) -> dict[int, str]:
    return {o.outbox_id: o.kind for o in outcomes}


async def test_delivers_a_batch_in_the_documented_shape(kafka_broker: TansuBroker) -> None:
    settings = kafka_settings(kafka_broker)
    transport = KafkaTransport(settings, {"cashback": KAFKA})
    batch = mixed_batch()
    try:
        outcomes = await transport.deliver("cashback", batch)
    finally:
        await transport.close()

    assert kinds(outcomes) == {d.outbox_id: "delivered" for d in batch}
    assert all(o.error is None and o.duration_ms >= 0 for o in outcomes)
    by_event = {d.event_id: d for d in batch}
    for event_type, topic in settings.topics.items():
        sent = [d for d in batch if d.payload["event_type"] == event_type]
        records = await read_topic(settings.bootstrap_servers, topic, expect=len(sent))
        assert len(records) == len(sent), topic
        for record in records:
            value = json.loads(record.value)
            d = by_event[value["event_id"]]
            # Exactly the documented fields (no "subject" wrapper, nothing extra).
            assert value == expected_value(d)
            assert record.key == d.ordering_key.encode()
            assert dict(record.headers) == {
                "event-type": event_type.encode(),
                "event-id": d.event_id.encode(),
            }
        # One subject's marks share a partition and keep the order they were made in.
        for key in {d.ordering_key for d in sent}:
            mine = [r for r in records if r.key == key.encode()]
            assert len({r.partition for r in mine}) == 1
            ids = [by_event[json.loads(r.value)["event_id"]].outbox_id for r in mine]
            assert ids == sorted(ids)


async def test_partition_order_follows_outbox_order_whatever_the_batch_order(
    kafka_broker: TansuBroker,
) -> None:
    settings = kafka_settings(kafka_broker)
    transport = KafkaTransport(settings, {"cashback": KAFKA})
    batch = [
        delivery(i, client_payload("cashback", f"o{i}", "u"), "client:u") for i in range(1, 21)
    ]
    try:
        outcomes = await transport.deliver("cashback", list(reversed(batch)))
    finally:
        await transport.close()
    assert set(kinds(outcomes).values()) == {"delivered"}
    records = await read_topic(settings.bootstrap_servers, settings.topics["client"], expect=20)
    assert [json.loads(r.value)["id"] for r in records] == [f"o{i}" for i in range(1, 21)]


async def test_consumer_topic_overrides_the_event_type_topics(kafka_broker: TansuBroker) -> None:
    settings = kafka_settings(kafka_broker)
    topic = f"custom.{uuid.uuid4().hex[:8]}"
    transport = KafkaTransport(settings, {"cashback": Consumer(transport="kafka", topic=topic)})
    batch = mixed_batch()
    try:
        outcomes = await transport.deliver("cashback", batch)
    finally:
        await transport.close()
    assert set(kinds(outcomes).values()) == {"delivered"}
    records = await read_topic(settings.bootstrap_servers, topic, expect=len(batch))
    assert sorted(json.loads(r.value)["event_id"] for r in records) == sorted(
        d.event_id for d in batch
    )


async def test_bad_messages_fail_and_the_rest_is_delivered(kafka_broker: TansuBroker) -> None:
    settings = kafka_settings(kafka_broker)
    transport = KafkaTransport(settings, {"cashback": KAFKA})
    good = delivery(1, client_payload("cashback", "fine", "u"), "client:u")
    no_subject = delivery(2, {**client_payload("cashback", "x", "u"), "subject": {}}, "client:u")
    unknown_type = delivery(3, {**anonymous_payload("b", "x"), "event_type": "robot"}, "r")
    # Over the producer's 1 MiB request limit.
    huge = delivery(4, client_payload("cashback", "y" * 1_100_000, "u"), "client:u")
    also_good = delivery(5, driver_payload("goals", "g", "p", "d"), "driver:p:d")
    try:
        outcomes = await transport.deliver(
            "cashback", [good, no_subject, unknown_type, huge, also_good]
        )
        unknown_consumer = await transport.deliver("nobody", [good])
    finally:
        await transport.close()

    assert kinds(outcomes) == {
        1: "delivered",
        2: "failed",
        3: "failed",
        4: "failed",
        5: "delivered",
    }
    errors = {o.outbox_id: o.error or "" for o in outcomes}
    assert "user_id" in errors[2]
    assert "robot" in errors[3]
    assert "MessageSizeTooLarge" in errors[4]
    assert kinds(unknown_consumer) == {1: "failed"}
    client = await read_topic(settings.bootstrap_servers, settings.topics["client"], expect=1)
    assert [json.loads(r.value)["id"] for r in client] == ["fine"]


async def test_a_message_the_broker_rejects_is_not_delivered(kafka_broker: TansuBroker) -> None:
    # The broker validates against the documented schema: a value that breaks it (here a
    # topic override that puts driver events where the client schema is enforced) must
    # never be reported as delivered.
    settings = kafka_settings(kafka_broker)
    client_topic = settings.topics["client"]
    transport = KafkaTransport(
        settings, {"cashback": Consumer(transport="kafka", topic=client_topic)}
    )
    try:
        outcomes = await transport.deliver(
            "cashback", [delivery(1, driver_payload("g", "g", "p", "d"), "k")]
        )
    finally:
        await transport.close()
    [outcome] = outcomes
    # Tansu answers INVALID_RECORD, which aiokafka does not know and reports as
    # UnknownError; the transport cannot tell that from a broker fault, so it retries.
    assert outcome.kind == "retry"
    assert outcome.error and "UnknownError" in outcome.error


async def test_concurrent_batches_share_one_producer(kafka_broker: TansuBroker) -> None:
    settings = kafka_settings(kafka_broker)
    names = [f"c{i}" for i in range(4)]
    transport = KafkaTransport(settings, dict.fromkeys(names, KAFKA))
    batches = {
        name: [
            delivery(i * 100 + j, client_payload("t", f"{name}-{j}", name), f"client:{name}")
            for j in range(25)
        ]
        for i, name in enumerate(names)
    }
    try:
        results = await asyncio.gather(*(transport.deliver(n, b) for n, b in batches.items()))
    finally:
        await transport.close()
    assert all(set(kinds(r).values()) == {"delivered"} for r in results)
    records = await read_topic(settings.bootstrap_servers, settings.topics["client"], expect=100)
    assert len(records) == 100


async def test_broker_down_gives_retry_outcomes_within_the_timeout(tmp_path: Path) -> None:
    # Never started: nothing listens on its port, so the producer cannot even start.
    broker = TansuBroker(parent_dir=tmp_path, validate=False)
    settings = kafka_settings(broker, request_timeout=2)
    transport = KafkaTransport(settings, {"cashback": KAFKA})
    batch = mixed_batch()
    try:
        t0 = time.monotonic()
        outcomes = await transport.deliver("cashback", batch)
        elapsed = time.monotonic() - t0
    finally:
        await transport.close()
    assert kinds(outcomes) == {d.outbox_id: "retry" for d in batch}
    assert all(o.error for o in outcomes)
    assert elapsed < 2.5


async def test_broker_outage_then_recovery(private_kafka_broker: TansuBroker) -> None:
    broker = private_kafka_broker
    timeout = 2.0
    settings: KafkaSettings = kafka_settings(broker, request_timeout=timeout)
    transport = KafkaTransport(settings, {"cashback": KAFKA})
    topic = settings.topics["client"]

    def batch(start: int, label: str) -> list[Delivery]:
        return [
            delivery(
                start + i,
                client_payload("cashback", f"{label}-{i}", f"u{i % 3}"),
                f"client:u{i % 3}",
            )
            for i in range(12)
        ]

    try:
        before = batch(1, "before")
        assert set(kinds(await transport.deliver("cashback", before)).values()) == {"delivered"}

        broker.stop()
        during = batch(100, "during")
        for _ in range(2):  # with the producer of before the outage, then with a new one
            t0 = time.monotonic()
            outcomes = await transport.deliver("cashback", during)
            assert time.monotonic() - t0 < timeout + 0.5
            assert kinds(outcomes) == {d.outbox_id: "retry" for d in during}
            assert all(o.error for o in outcomes)

        broker.start()  # same port, empty: memory storage
        broker.register_schemas(settings.topics)
        after = batch(200, "after")
        # As the dispatcher does: what comes back as retry is sent again. On a busy machine
        # the first attempts may meet a broker that is not answering yet; every row must
        # still be delivered, and (below) exactly once.
        pending = during + after
        deadline = time.monotonic() + patience(30)
        while pending:
            assert time.monotonic() < deadline, f"still not delivered: {len(pending)} rows"
            outcomes = await transport.deliver("cashback", pending)
            assert set(kinds(outcomes).values()) <= {"delivered", "retry"}
            done = {i for i, kind in kinds(outcomes).items() if kind == "delivered"}
            pending = [d for d in pending if d.outbox_id not in done]
    finally:
        await transport.close()

    records = await read_topic(settings.bootstrap_servers, topic, expect=24)
    # At least once: an attempt that timed out may have landed too, so ids are compared
    # as a set (consumers deduplicate, docs/kafka/).
    ids = {json.loads(r.value)["id"] for r in records}
    assert ids == {d.payload["id"] for d in during + after}


async def test_a_frozen_broker_gives_retry_outcomes_within_the_timeout(
    private_kafka_broker: TansuBroker,
) -> None:
    # Worse than a dead broker: connections stay open and nothing answers, the case where
    # an unbounded client would wait forever.
    broker = private_kafka_broker
    settings = kafka_settings(broker, request_timeout=1.5)
    transport = KafkaTransport(settings, {"cashback": KAFKA})
    topic = settings.topics["client"]

    def batch(start: int) -> list[Delivery]:
        return [
            delivery(start + i, client_payload("t", f"m{start + i}", "u"), "client:u")
            for i in range(5)
        ]

    try:
        assert set(kinds(await transport.deliver("cashback", batch(1))).values()) == {"delivered"}
        broker.pause()
        try:
            for start in (10, 20):  # the producer in use, then a new one that cannot start
                t0 = time.monotonic()
                outcomes = await transport.deliver("cashback", batch(start))
                assert time.monotonic() - t0 < 1.5 + 0.5
                assert set(kinds(outcomes).values()) == {"retry"}
        finally:
            broker.resume()
        outcomes = await transport.deliver("cashback", batch(30))
        assert set(kinds(outcomes).values()) == {"delivered"}
    finally:
        await transport.close()
    # The broker kept its memory: what was acknowledged is there, and what was not
    # acknowledged may be there too (it reached the broker before the freeze).
    records = await read_topic(settings.bootstrap_servers, topic, expect=10)
    ids = {json.loads(r.value)["id"] for r in records}
    assert {f"m{i}" for i in (*range(1, 6), *range(30, 35))} <= ids
