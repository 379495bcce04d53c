"""Fixtures of the integration tests beyond tests/conftest.py: the Tansu Kafka broker, and
a running API for the notification tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.kafka_broker import kafka_broker, private_kafka_broker
from tests.notify_api import running_api

__all__ = ["api_client", "kafka_broker", "private_kafka_broker"]


@pytest.fixture(name="api")
async def api_client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the test config, on a loopback port, and a client for it (test files
    that need another config define their own `api`)."""
    async with running_api(db_url) as client:
        yield client
