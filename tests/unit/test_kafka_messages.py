"""The Kafka message of an outbox row (no broker), and the committed JSON Schemas."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from dispatcher.kafka_transport import MessageError, build_message
from dispatcher.transport_base import Delivery
from service.config.core import KafkaSettings
from service.config.seen import Consumer
from service.seen import kafka_schema

SETTINGS = KafkaSettings(topics={"client": "c.topic", "driver": "d.topic", "anonymous": "a.topic"})
KAFKA = Consumer(transport="kafka")


def delivery(payload: dict[str, Any], key: str = "client:u1") -> Delivery:
    return Delivery(1, str(uuid.uuid4()), "cashback", key, payload, 1, datetime.now(UTC))


def test_committed_schemas_are_up_to_date() -> None:
    stale = kafka_schema.stale()
    assert not stale, f"regenerate with `python -m service.seen.kafka_schema`: {stale}"


def test_one_schema_per_event_type() -> None:
    names = sorted(p.name for p in kafka_schema.SCHEMA_DIR.glob("*.schema.json"))
    assert names == ["anonymous.schema.json", "client.schema.json", "driver.schema.json"]


def test_a_client_mark_becomes_the_documented_message() -> None:
    payload = {
        "event_type": "client",
        "tag": "cashback",
        "id": "offer-1",
        "seen_at": "2025-01-02T03:04:05+00:00",
        "subject": {"user_id": "u1", "uid": "42", "bound_uids": ["7"], "phone_id": "p"},
    }
    d = delivery(payload)
    m = build_message(SETTINGS, KAFKA, d)
    assert m.topic == "c.topic"
    assert m.key == b"client:u1"
    assert json.loads(m.value) == {
        "event_type": "client",
        "event_id": d.event_id,
        "tag": "cashback",
        "id": "offer-1",
        "seen_at": "2025-01-02T03:04:05+00:00",
        "user_id": "u1",
        "uid": "42",
        "bound_uids": ["7"],
        "phone_id": "p",
    }
    assert m.headers == [("event-type", b"client"), ("event-id", d.event_id.encode())]
    # Every field the schema declares, and only those.
    schema = json.loads((kafka_schema.SCHEMA_DIR / "client.schema.json").read_text())
    [definition] = schema["$defs"].values()
    assert set(json.loads(m.value)) == set(definition["properties"]) == set(definition["required"])


@pytest.mark.parametrize(
    ("event_type", "subject", "topic"),
    [("driver", {"db_id": "p", "uuid": "d"}, "d.topic"), ("anonymous", {}, "a.topic")],
)
def test_topic_per_event_type(event_type: str, subject: dict[str, str], topic: str) -> None:
    payload = {"event_type": event_type, "tag": "t", "id": "i", "seen_at": "s", "subject": subject}
    assert build_message(SETTINGS, KAFKA, delivery(payload)).topic == topic


def test_consumer_topic_wins() -> None:
    payload = {"event_type": "anonymous", "tag": "t", "id": "i", "seen_at": "s", "subject": {}}
    consumer = Consumer(transport="kafka", topic="own")
    assert build_message(SETTINGS, consumer, delivery(payload)).topic == "own"


@pytest.mark.parametrize(
    ("payload", "settings", "needle"),
    [
        ({"event_type": "client", "tag": "t", "id": "i", "seen_at": "s"}, SETTINGS, "user_id"),
        ({"tag": "t", "id": "i", "seen_at": "s", "subject": {}}, SETTINGS, "event_type"),
        (
            {
                "event_type": "driver",
                "tag": "t",
                "id": "i",
                "seen_at": "s",
                "subject": {"db_id": 1},
            },
            SETTINGS,
            "driver",
        ),
        (
            {"event_type": "anonymous", "tag": "t", "id": "i", "seen_at": "s", "subject": {}},
            msgspec.structs.replace(SETTINGS, topics={"client": "c"}),
            "no topic",
        ),
    ],
)
def test_unusable_rows_are_message_errors(
    payload: dict[str, Any], settings: KafkaSettings, needle: str
) -> None:
    with pytest.raises(MessageError, match=needle):
        build_message(settings, KAFKA, delivery(payload))
