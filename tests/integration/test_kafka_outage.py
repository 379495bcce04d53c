"""End to end through a Kafka outage: API -> outbox -> Dispatcher -> KafkaTransport -> Tansu.

Under a steady load of POST /v1/seen, the broker is killed for 10 s and restarted on the
same port (memory storage: it comes back empty). Every accepted mark must end up
delivered, and "delivered" must only ever follow a broker acknowledgement:
- what was delivered before the outage is in the topics (read while the broker lived);
- nothing is delivered while the broker is down;
- what was not acknowledged when it died (every row that needed a retry, every mark
  made during the outage) is delivered after the restart and is in the new topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer

from dispatcher.kafka_transport import KafkaTransport
from dispatcher.startup import start_up
from dispatcher.transport_base import Delivery, Outcome, Transport
from dispatcher.worker import Dispatcher
from service.app import create_app
from service.config.load import Config, parse_config
from service.notify.templates import load_templates
from tests.consumers import wait_until
from tests.kafka_broker import TansuBroker, kafka_settings, read_topic
from tests.support import bearer, client_token, config_data, driver_token, serve

pytestmark = pytest.mark.kafka

OUTAGE_S = 10.0
CONSUMER = "seen-kafka"


@dataclass(frozen=True, slots=True)
class Call:
    started: float
    ended: float
    outcomes: list[Outcome]


class RecordingTransport(Transport):
    """The real KafkaTransport, with a log of when each batch ran and how it ended."""

    def __init__(self, inner: KafkaTransport) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        started = time.monotonic()
        outcomes = await self.inner.deliver(consumer, batch)
        self.calls.append(Call(started, time.monotonic(), outcomes))
        return outcomes

    async def close(self) -> None:
        await self.inner.close()

    def delivered(
        self, *, started_after: float = 0.0, ended_before: float = float("inf")
    ) -> set[int]:
        return {
            o.outbox_id
            for c in self.calls
            if c.started >= started_after and c.ended < ended_before
            for o in c.outcomes
            if o.kind == "delivered"
        }


def make_config(db_url: str, broker: TansuBroker) -> Config:
    settings = kafka_settings(broker, request_timeout=2)
    data = config_data(db_url)
    data["kafka"] = msgspec.to_builtins(settings)
    data["dispatcher"] = {"sweep_interval": 0.5}
    data["consumers"] = {
        CONSUMER: {
            "transport": "kafka",
            "batch_size": 200,
            # Quick to come back once the broker does.
            "backoff": {"initial": 0.2, "factor": 2.0, "cap": 1.0},
            "breaker": {"failures": 3, "cooldown": 0.5, "max_cooldown": 1.0},
        }
    }
    data["tags"] = {
        "promotions": {"consumer": CONSUMER, "event_type": "client", "remember_for": 3600},
        "personal-goals": {"consumer": CONSUMER, "event_type": "driver", "remember_for": 3600},
        "banners": {"consumer": CONSUMER, "event_type": "anonymous", "remember_for": 3600},
        "notifications": {"event_type": "client", "remember_for": 3600},
    }
    return parse_config(data, "kafka-outage-test")


class Load:
    """Steady POST /v1/seen traffic: clients, drivers and anonymous callers in turn."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.accepted = 0
        self.refused: list[str] = []
        self._stop = asyncio.Event()
        self._ids = itertools.count()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, workers: int = 4, pause_s: float = 0.02) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            await asyncio.gather(*(self._worker(http, w, pause_s) for w in range(workers)))

    async def _worker(self, http: httpx.AsyncClient, w: int, pause_s: float) -> None:
        client = bearer(client_token(f"user-{w}"))
        driver = bearer(driver_token("park-1", f"driver-{w}"))
        while not self._stop.is_set():
            n = next(self._ids)
            tag, headers = [
                ("promotions", client),
                ("personal-goals", driver),
                ("banners", {"Idempotency-Key": f"anon-{n}"}),
            ][n % 3]
            response = await http.post(
                "/v1/seen", json={"tag": tag, "id": f"item-{n}"}, headers=headers
            )
            if response.status_code == 200 and response.json()["status"] == "recorded":
                self.accepted += 1
            else:
                self.refused.append(f"{response.status_code} {response.text}")
            await asyncio.sleep(pause_s)


class Tap:
    """Reads every topic while the broker lives: the event ids the broker really holds."""

    def __init__(self, bootstrap_servers: str, topics: list[str]) -> None:
        self.seen: set[str] = set()
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for record in self._consumer:
            self.seen.add(json.loads(record.value)["event_id"])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


@dataclass(frozen=True, slots=True)
class Row:
    event_id: str
    event_type: str
    status: str


async def outbox_rows(db: psycopg.AsyncConnection[Any]) -> dict[int, Row]:
    cur = await db.execute("SELECT id, event_id::text, payload->>'event_type', status FROM outbox")
    return {r[0]: Row(r[1], r[2], r[3]) for r in await cur.fetchall()}


async def db_now(db: psycopg.AsyncConnection[Any]) -> Any:
    cur = await db.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None
    return row[0]


@pytest.mark.citus
async def test_broker_outage_under_load_loses_nothing(
    db_url: str, db: psycopg.AsyncConnection[Any], private_kafka_broker: TansuBroker
) -> None:
    broker = private_kafka_broker
    config = make_config(db_url, broker)
    topics = list(config.kafka.topics.values())
    transport = RecordingTransport(KafkaTransport(config.kafka, dict(config.consumers)))
    dispatcher = Dispatcher(config, db_url, name="outage-test", transports={CONSUMER: transport})
    dispatching = asyncio.create_task(
        dispatcher.run(start_up(config, db_url, load_templates(config), name=dispatcher.name))
    )
    tap = Tap(broker.bootstrap_servers, topics)
    await tap.start()
    try:
        async with serve(create_app(config)) as base_url:
            load = Load(base_url)
            loading = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(2.5)
                # Every row marked delivered so far must be on the broker: give the tap
                # time to read them (the broker is still up, the load goes on).
                rows = await outbox_rows(db)
                wanted = {r.event_id for r in rows.values() if r.status == "delivered"}
                assert wanted, "nothing was delivered before the outage"

                async def tapped() -> bool:
                    return wanted <= tap.seen

                await wait_until(tapped, 10, "the tap to read the pre-outage deliveries")
                await tap.stop()

                await asyncio.to_thread(broker.stop)
                killed_at, killed_db = time.monotonic(), await db_now(db)
                await asyncio.sleep(OUTAGE_S)
                restarted_at, restarted_db = time.monotonic(), await db_now(db)
                await asyncio.to_thread(broker.start)
                broker.register_schemas(config.kafka.topics)
                await asyncio.sleep(2.0)
            finally:
                load.stop()
                await loading

            assert not load.refused, load.refused[:5]

            async def all_delivered() -> bool:
                rows = await outbox_rows(db)
                done = all(r.status == "delivered" for r in rows.values())
                return done and len(rows) == load.accepted

            await wait_until(all_delivered, 30, "every mark to be delivered")
    finally:
        dispatcher.stop()
        await dispatching
        await tap.stop()

    rows = await outbox_rows(db)
    assert len(rows) == load.accepted > 0
    # Nothing can be acknowledged by a dead broker: no batch that ran while it was down
    # reported a delivery, and no row was marked delivered then (give a batch acknowledged
    # just before the kill a second to be recorded).
    assert not transport.delivered(started_after=killed_at, ended_before=restarted_at)
    cur = await db.execute(
        "SELECT count(*) FROM outbox WHERE delivered_at > %s + interval '1 second'"
        " AND delivered_at < %s",
        (killed_db, restarted_db),
    )
    assert await cur.fetchone() == (0,)

    cur = await db.execute(
        "SELECT DISTINCT outbox_id FROM delivery_attempts WHERE outcome = 'retry'"
    )
    retried = {r[0] for r in await cur.fetchall()}
    assert retried, "the outage caused no retry: the test did not test anything"
    cur = await db.execute(
        "SELECT id FROM outbox WHERE created_at >= %s AND created_at < %s",
        (killed_db, restarted_db),
    )
    made_during = {r[0] for r in await cur.fetchall()}
    assert made_during, "no mark was made during the outage"

    cur = await db.execute("SELECT id FROM outbox WHERE delivered_at >= %s", (restarted_db,))
    after = {r[0] for r in await cur.fetchall()}
    assert after == transport.delivered(started_after=restarted_at)
    # What the broker had not acknowledged when it died was delivered after the restart...
    assert retried | made_during <= after
    # ...and is really in the topics, which were empty at the restart.
    on_broker: set[str] = set()
    for event_type, topic in config.kafka.topics.items():
        expect = sum(1 for i in after if rows[i].event_type == event_type)
        records = await read_topic(broker.bootstrap_servers, topic, expect=expect)
        on_broker |= {json.loads(r.value)["event_id"] for r in records}
    missing = sorted(i for i in after if rows[i].event_id not in on_broker)
    assert not missing, f"{len(missing)} rows delivered after the restart are not in Kafka"
