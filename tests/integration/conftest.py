"""Fixtures of the integration tests beyond tests/conftest.py: the Tansu Kafka broker."""

from __future__ import annotations

from tests.kafka_broker import kafka_broker, private_kafka_broker

__all__ = ["kafka_broker", "private_kafka_broker"]
