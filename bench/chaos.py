"""Faults under load: `python -m bench.chaos [--only NAME ...]`.

A steady load of real `POST /v1/seen` (to an HTTP consumer; in the Kafka broker's
scenario, to a Kafka consumer on Tansu) and `POST /v1/events` (email
over SMTP and SMS through a provider) from clients that retry as apps do (5xx, 429 and
connection errors, with the same Idempotency-Key / idempotency_key), while one fault at a
time hits the system. The API (uvicorn) and two dispatchers are real processes, the
database a private PostgreSQL (tests/chaos_support.py), the peers the tests' own. After
each fault: is every acknowledged request in the database, and delivered? How many
arrived twice, and how long after the fault ended was the backlog delivered?
Loopback only; docs/reliability.md keeps a run's table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer
from aiosmtpd.smtp import SMTP
from starlette.requests import Request
from starlette.responses import Response

from service import migrate
from tests.chaos_support import (
    PrivatePostgres,
    Process,
    api_process,
    dispatcher_process,
    service_env,
    wait_ready,
)
from tests.consumers import Received, RecordingConsumer, Reply, http_consumer, to_toml
from tests.kafka_broker import TansuBroker, kafka_settings
from tests.notify_api import RECEIPT, new_key
from tests.providers import Providers
from tests.smtp_server import SmtpServer
from tests.support import bearer, client_token, config_data, free_port, notify_data, serve

RATE = 40.0  # requests/s offered, half seen marks, half events
USERS = 20
LEAD_S = 2.0  # load before the fault
TAIL_S = 3.0  # load after it
DRAIN_S = 60.0  # for the backlog to be delivered
GIVE_UP_S = 60.0  # a client's retries of one request
HANG_S = 5.0  # the answer a hanging consumer never gives in time
KAFKA_FAULT = "Kafka broker restart"
KAFKA_TAG = "offers"  # its consumer is Kafka; only the Kafka scenario's marks use it
KAFKA_CONSUMER = "seen-kafka"


@dataclass
class Load:
    """Acknowledged requests of one scenario and what the clients met on the way."""

    seen: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    slowest_503_s: float = 0.0
    unacknowledged: int = 0
    sent: int = 0
    seen_tag: str = "promotions"


@dataclass
class Row:
    fault: str
    load_rps: float
    acknowledged: int
    found: int
    delivered: int
    duplicates: int
    recovery_s: float | None
    note: str = ""

    @property
    def lost(self) -> int:
        return self.acknowledged - self.found


class Consumer(RecordingConsumer):
    """The HTTP consumer, switched between behaving, hanging, slow and failing."""

    mode: str = "ok"


class RecordingProviders(Providers):
    """Providers that also note each answer, so a second 2xx for one webhook-id counts
    as a duplicate."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: Counter[str] = Counter()

    async def _receive(self, request: Request) -> Response:
        response = await super()._receive(request)
        if response.status_code < 300:
            self.accepted[request.headers["webhook-id"]] += 1
        return response


class RestartableSmtp:
    """The tests' SMTP recorder on one fixed port, which can go down and come back."""

    def __init__(self) -> None:
        self.recorder = SmtpServer()
        self.port = free_port()
        self.recorder.port = self.port
        self._server: asyncio.Server | None = None

    async def up(self) -> None:
        loop = asyncio.get_running_loop()

        def session() -> SMTP:
            protocol = SMTP(self.recorder, hostname="chaos.test", loop=loop)
            self.recorder.sessions.append(protocol)  # the recorder numbers sessions
            return protocol

        self._server = await loop.create_server(session, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self.recorder.drop_sessions()
            await self._server.wait_closed()
            self._server = None

    def duplicates(self) -> int:
        ids = Counter(m.message["Message-ID"] for m in self.recorder.mails)
        return sum(n - 1 for n in ids.values())


class TopicReader:
    """Reads the Kafka consumer's topic from the beginning for as long as it runs, and
    counts each message's event id, taken from the value and the `event-id` header as
    dispatcher/kafka_transport.py writes them.

    Tansu runs with memory storage here (its build has no durable engine), so a broker
    restart comes back with an empty topic: the reader is stopped while the broker is down
    (nothing can arrive then) and started again from offset 0 of the new topic, which
    holds only what was produced after the restart. Counts span both, so a message
    written before the kill and again after it counts as a duplicate."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.counts: Counter[str] = Counter()
        self.malformed = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        # No group: the consumer takes every partition and starts at the earliest offset.
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=5000,
            # Short polls: a message the broker acknowledged is read within ~0.1 s, which
            # leaves little unread when the broker is killed (and loses what it held).
            fetch_max_wait_ms=100,
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        self._consumer = consumer
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    for record in records:
                        self._take(record)
        finally:
            await _close(consumer)

    def _take(self, record: Any) -> None:
        headers = {k: bytes(v).decode() for k, v in record.headers}
        try:
            event_id = json.loads(record.value)["event_id"]
        except (ValueError, KeyError, TypeError):
            event_id = None
        # A message a consumer could not deduplicate (no key, no or contradictory event
        # id) is counted apart, and not as a delivery.
        if not record.key or event_id is None or headers.get("event-id") != event_id:
            self.malformed += 1
            return
        self.counts[event_id] += 1

    async def caught_up(self, within: float) -> bool:
        """Wait until the reader has every message of every partition: its position is the
        high watermark of the latest fetch. Only meaningful while nothing is produced."""
        assert self._consumer is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self._at_end(self._consumer):
                return True
            await asyncio.sleep(0.05)
        return False

    @staticmethod
    async def _at_end(consumer: AIOKafkaConsumer) -> bool:
        partitions = consumer.assignment()
        for tp in partitions:
            high = consumer.highwater(tp)
            if high is None or await consumer.position(tp) < high:
                return False
        return bool(partitions)

    async def stop(self) -> None:
        self._consumer = None
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task

    def duplicates(self, event_ids: set[str]) -> int:
        return sum(self.counts[e] - 1 for e in event_ids if self.counts[e] > 1)


async def _close(consumer: AIOKafkaConsumer) -> None:
    try:
        await asyncio.wait_for(consumer.stop(), 5)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # aiokafka 0.14: with the broker gone, stop() re-raises the CancelledError of the
        # fetch task it cancels, before closing the client: close the connections here.
        await consumer._client.close()
    except Exception as exc:
        print(f"closing the Kafka reader: {exc!r}", flush=True)


@dataclass
class World:
    pg: PrivatePostgres
    api: Process
    dispatchers: list[Process]
    base: str
    key: str
    consumer: Consumer
    providers: RecordingProviders
    smtp: RestartableSmtp
    config: dict[str, Any]
    broker: TansuBroker
    reader: TopicReader
    broker_restarted_at: datetime | None = None

    async def one(self, query: Any, params: Any) -> tuple[Any, ...]:
        # A connection per question: the faults restart the database.
        async with await psycopg.AsyncConnection.connect(self.pg.url, autocommit=True) as conn:
            row = await (await conn.execute(query, params)).fetchone()
        assert row is not None
        return row

    def duplicates(self) -> int:
        providers = sum(n - 1 for n in self.providers.accepted.values())
        return self.consumer.duplicates + providers + self.smtp.duplicates()


async def _request(
    client: httpx.AsyncClient, load: Load, method: str, url: str, **kwargs: Any
) -> bool:
    """One request, retried as an app would until it is answered; True if acknowledged."""
    deadline = time.monotonic() + GIVE_UP_S
    pause = 0.1
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            load.statuses[type(exc).__name__] += 1
        else:
            load.statuses[str(response.status_code)] += 1
            if response.status_code == 503:
                load.slowest_503_s = max(load.slowest_503_s, time.monotonic() - t0)
            if response.status_code < 300:
                return True
            if response.status_code not in (429, 503) and response.status_code < 500:
                raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
            with contextlib.suppress(ValueError):
                pause = min(1.0, float(response.headers.get("retry-after", pause)))
        await asyncio.sleep(pause)
        pause = min(1.0, pause * 2)
    return False


async def _send(world: World, client: httpx.AsyncClient, load: Load, name: str, n: int) -> None:
    user = f"u{n % USERS}"
    if n % 2:
        item = f"{name}-{n}"
        ok = await _request(
            client,
            load,
            "POST",
            "/v1/seen",
            json={"tag": load.seen_tag, "id": item},
            headers=bearer(client_token(user)) | {"Idempotency-Key": item},
        )
        if ok:
            load.seen.append(item)
    else:
        key = f"{name}-{n}"
        body = {
            "type": "payment_receipt",
            "idempotency_key": key,
            "recipients": {"user_ids": [user]},
            "data": RECEIPT | {"order_id": key},
        }
        ok = await _request(
            client, load, "POST", "/v1/events", json=body, headers=bearer(world.key)
        )
        if ok:
            load.events.append(key)
    if not ok:
        load.unacknowledged += 1


async def _run_load(world: World, name: str, load: Load, stop: asyncio.Event) -> None:
    """Open loop at RATE: a request is sent on schedule whether earlier ones returned."""
    pending: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=world.base, timeout=10, limits=limits) as client:
        start = time.monotonic()
        for n in itertools.count():
            if stop.is_set():
                break
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            load.sent += 1
            task = asyncio.create_task(_send(world, client, load, name, n))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)


async def _delivered(world: World, load: Load) -> tuple[int, int]:
    """(acknowledged requests found in the database, of them delivered: every outbox row
    of theirs delivered)."""
    seen = await world.one(
        "SELECT count(*), count(*) FILTER (WHERE o.status = 'delivered')"
        " FROM seen_marks m LEFT JOIN outbox o ON o.id = m.outbox_id"
        " WHERE m.tag = %s AND m.item_id = ANY(%s)",
        [load.seen_tag, load.seen],
    )
    events = await world.one(
        "SELECT count(DISTINCT e.id),"
        " count(DISTINCT e.id) FILTER (WHERE NOT EXISTS ("
        "   SELECT 1 FROM notifications n JOIN outbox o ON o.notification_id = n.id"
        "   WHERE n.event_id = e.id AND o.status <> 'delivered'))"
        " FROM events e WHERE e.idempotency_key = ANY(%s)",
        [load.events],
    )
    return int(seen[0]) + int(events[0]), int(seen[1]) + int(events[1])


async def _recovery(world: World, load: Load, cleared: datetime) -> float | None:
    """Seconds from the fault's end until service is back: the rows acknowledged before it
    are delivered, and so is the first row written after it."""
    row = await world.one(
        "SELECT greatest(max(o.delivered_at) FILTER (WHERE o.created_at <= %(at)s),"
        "                min(o.delivered_at) FILTER (WHERE o.created_at > %(at)s))"
        " FROM outbox o"
        " LEFT JOIN seen_marks m ON m.outbox_id = o.id"
        " LEFT JOIN notifications n ON n.id = o.notification_id"
        " LEFT JOIN events e ON e.id = n.event_id"
        " WHERE m.item_id = ANY(%(seen)s) OR e.idempotency_key = ANY(%(events)s)",
        {"at": cleared, "seen": load.seen, "events": load.events},
    )
    if row[0] is None:
        return None
    seconds: float = (row[0] - cleared).total_seconds()
    return max(0.0, seconds)


async def _kafka_marks(world: World, load: Load) -> list[tuple[str, str, datetime | None]]:
    """(status, event id, delivered_at) of the outbox row of each acknowledged mark."""
    async with await psycopg.AsyncConnection.connect(world.pg.url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT o.status, o.event_id::text, o.delivered_at"
            " FROM seen_marks m JOIN outbox o ON o.id = m.outbox_id"
            " WHERE m.tag = %s AND m.item_id = ANY(%s)",
            [load.seen_tag, load.seen],
        )
        return [(r[0], r[1], r[2]) for r in await cursor.fetchall()]


@dataclass
class KafkaCheck:
    delivered: int  # marks whose outbox row is delivered
    in_topic: int  # delivered in the outbox and read from the topic
    unread_before: int  # delivered (acknowledged) by the broker before its kill, never read
    unread_after: int  # delivered after the restart, never read: ours, never expected
    duplicates: int
    first_after_s: float | None  # first delivery after the restart, from the restart


async def _kafka_check(world: World, load: Load) -> KafkaCheck:
    restarted = world.broker_restarted_at
    marks = await _kafka_marks(world, load)
    delivered = [(e, at) for status, e, at in marks if status == "delivered"]
    # Messages written last are read within a poll: give them a moment.
    for _ in range(25):
        if all(e in world.reader.counts for e, _ in delivered):
            break
        await asyncio.sleep(0.2)
    unread = [at for e, at in delivered if e not in world.reader.counts]
    # While the broker was down nothing could be acknowledged, so a row delivered before
    # the restart was acknowledged by the broker that was then killed with its memory.
    before = sum(1 for at in unread if restarted is None or at is None or at < restarted)
    after_restart = [at for _, at in delivered if at is not None and restarted and at > restarted]
    first = (
        (min(after_restart) - restarted).total_seconds() if after_restart and restarted else None
    )
    return KafkaCheck(
        delivered=len(delivered),
        in_topic=len(delivered) - len(unread),
        unread_before=before,
        unread_after=len(unread) - before,
        duplicates=world.reader.duplicates({e for _, e, _ in marks}),
        first_after_s=first,
    )


Fault = Callable[[World], Awaitable[str]]


async def run_scenario(world: World, name: str, fault: Fault) -> Row:
    """Load, fault (which returns once it is over, with a note), load, then drain."""
    load, stop = Load(seen_tag=SEEN_TAG.get(name, "promotions")), asyncio.Event()
    kafka = load.seen_tag == KAFKA_TAG
    if kafka:
        await world.reader.start()
    dups_before = world.duplicates()
    started = time.monotonic()
    runner = asyncio.create_task(_run_load(world, name, load, stop))
    await asyncio.sleep(LEAD_S)
    note = await fault(world)
    cleared = datetime.now(UTC)
    await asyncio.sleep(TAIL_S)
    stop.set()
    await runner
    took = time.monotonic() - started
    acknowledged = len(load.seen) + len(load.events)
    deadline = time.monotonic() + DRAIN_S
    while True:
        found, delivered = await _delivered(world, load)
        if delivered == found or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # room for a stray second delivery to arrive
    recovery = await _recovery(world, load, cleared)
    duplicates = world.duplicates() - dups_before
    if kafka:
        check = await _kafka_check(world, load)
        await world.reader.stop()
        # For Kafka, delivered also means: in the topic, as a consumer reads it.
        delivered += check.in_topic - check.delivered
        duplicates += check.duplicates
        if check.first_after_s is not None:
            note += f"; first delivery {check.first_after_s:.1f} s after the restart"
        if check.unread_before:
            note += (
                f"; {check.unread_before} acknowledged by the broker just before its kill"
                " and lost with its memory storage"
            )
        if check.unread_after:
            note += f"; {check.unread_after} delivered after the restart but not in the topic"
        if world.reader.malformed:
            note += f"; {world.reader.malformed} malformed messages"
    if load.unacknowledged:
        note += f"; {load.unacknowledged} never acknowledged (gave up)"
    errors = {k: v for k, v in load.statuses.items() if k not in ("200", "202")}
    if load.statuses["503"]:
        note += f"; slowest 503 {load.slowest_503_s:.2f} s"
    if errors:
        note += "; clients met " + ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))
    return Row(
        name,
        load.sent / took,
        acknowledged,
        found,
        delivered,
        duplicates,
        recovery,
        note.strip("; "),
    )


# -- the faults ----------------------------------------------------------------------------


async def pg_restart(world: World) -> str:
    await asyncio.to_thread(world.pg.stop, "fast")
    await asyncio.sleep(3.0)
    await asyncio.to_thread(world.pg.start)
    return "down 3 s (fast shutdown)"


async def pg_crash(world: World) -> str:
    await asyncio.to_thread(world.pg.stop, "immediate")
    await asyncio.sleep(3.0)
    await asyncio.to_thread(world.pg.start)
    return "down 3 s (immediate: crash recovery)"


async def api_kill(world: World) -> str:
    world.api.signal(signal.SIGKILL)
    world.api.wait(5)
    await asyncio.sleep(1.0)
    world.api.start()
    await asyncio.to_thread(wait_ready, world.base, 30.0, world.api)
    return "SIGKILL, restarted after 1 s"


async def dispatcher_kill(world: World) -> str:
    victim = world.dispatchers[0]
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    await asyncio.sleep(2.0)
    victim.start()
    return "SIGKILL mid-batch, restarted after 2 s; its rows wait out the lease"


async def smtp_down(world: World) -> str:
    await world.smtp.down()
    await asyncio.sleep(5.0)
    await world.smtp.up()
    return "refusing connections for 5 s"


async def kafka_restart(world: World) -> str:
    # Memory storage loses what the broker held, so a message it acknowledged just before
    # the kill would vanish unread and could not be told from one we lost. The dispatchers
    # are frozen for the instant of the kill, once the reader has read all the broker
    # has: every acknowledgement the dispatchers can get from this broker is then read.
    for d in world.dispatchers:
        d.signal(signal.SIGSTOP)
    try:
        # Two fetches at least, so the high watermarks postdate the freeze.
        await asyncio.sleep(0.3)
        caught_up = await world.reader.caught_up(within=3.0)
        await asyncio.to_thread(world.broker.stop)  # SIGKILL
    finally:
        for d in world.dispatchers:
            d.signal(signal.SIGCONT)
    # Dead broker, nothing more to read: what the reader has is all the old topic gave.
    await world.reader.stop()
    await asyncio.sleep(3.0)
    await asyncio.to_thread(world.broker.start)
    world.broker_restarted_at = datetime.now(UTC)
    # Memory storage: the topic starts again empty, at offset 0.
    await world.reader.start()
    note = "SIGKILL, restarted on its port after 3 s (memory storage: back empty)"
    return note if caught_up else note + "; the reader had not caught up at the kill"


async def sms_down(world: World) -> str:
    for name in ("sms-primary", "sms-fallback"):
        world.providers.status[name] = 503
    await asyncio.sleep(5.0)
    world.providers.status.clear()
    return "both SMS providers 503 for 5 s"


def _consumer_fault(mode: str, seconds: float, note: str) -> Fault:
    async def fault(world: World) -> str:
        world.consumer.mode = mode
        await asyncio.sleep(seconds)
        world.consumer.mode = "ok"
        world.consumer.release.set()
        world.consumer.release = asyncio.Event()
        return note

    return fault


async def pool_exhausted(world: World) -> str:
    """Every API connection stuck behind a lock: new requests must get 503 fast."""
    async with await psycopg.AsyncConnection.connect(world.pg.url) as conn:
        await conn.execute("LOCK TABLE seen_marks, events IN ACCESS EXCLUSIVE MODE")
        await asyncio.sleep(4.0)
        await conn.rollback()
    return "writes blocked by a lock for 4 s (pool of 4, acquire_timeout 1 s)"


FAULTS: dict[str, Fault] = {
    "none (baseline)": lambda world: asyncio.sleep(3.0, "no fault"),
    "PostgreSQL restart": pg_restart,
    "PostgreSQL crash": pg_crash,
    "API SIGKILL": api_kill,
    "dispatcher SIGKILL": dispatcher_kill,
    KAFKA_FAULT: kafka_restart,
    "SMTP server down": smtp_down,
    "SMS provider down": sms_down,
    "HTTP consumer hangs": _consumer_fault("hang", 5.0, "hangs 5 s (timeout 1 s)"),
    "HTTP consumer slow": _consumer_fault("slow", 5.0, "answers in 0.8 s for 5 s"),
    "HTTP consumer 500": _consumer_fault("500", 10.0, "answers 500 for 10 s"),
    "pool exhausted": pool_exhausted,
}
# The tag of each scenario's seen marks, when not "promotions" (HTTP consumer).
SEEN_TAG: dict[str, str] = {KAFKA_FAULT: KAFKA_TAG}


# -- the world -------------------------------------------------------------------------------


def _chaos_config(
    db_url: str, consumer: str, smtp_port: int, providers: str, broker: TansuBroker
) -> dict[str, Any]:
    fast = {"concurrency": 8, "batch_size": 16, "timeout": 1}
    consumers = {
        "promotions": http_consumer(f"{consumer}/seen", **fast),
        KAFKA_CONSUMER: {
            "transport": "kafka",
            "batch_size": 16,
            # Back soon after the broker is: short backoff, a breaker that reopens fast.
            "backoff": {"initial": 0.2, "factor": 2.0, "cap": 1.0},
            "breaker": {"failures": 3, "cooldown": 0.5, "max_cooldown": 1.0},
        },
    }
    data = config_data(
        db_url,
        consumers=consumers,
        dispatcher={"sweep_interval": 2, "lease": 5, "metrics_port": 0},
    )
    data["database"] |= {"pool_min": 1, "pool_max": 4, "acquire_timeout": 1}
    data["api"] |= {"retry_after_s": 1}
    data["tags"] = {k: data["tags"][k] for k in ("promotions", "notifications")}
    data["tags"][KAFKA_TAG] = {
        "consumer": KAFKA_CONSUMER,
        "event_type": "client",
        "remember_for": 86400,
    }
    # Fresh topics whose values the broker checks against docs/kafka/*.schema.json; no
    # idempotence (Tansu rejects InitProducerId).
    settings = kafka_settings(broker, request_timeout=2)
    data["kafka"] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "topics": dict(settings.topics),
        "enable_idempotence": False,
        "request_timeout": 2,
    }
    data |= notify_data(smtp_port=smtp_port, providers_url=providers)
    # Leases follow a batch's worst case (dispatcher/loop.py, lease_for): small batches
    # and timeouts keep a killed dispatcher's rows from waiting minutes.
    for channel in ("email", "sms"):
        data["channels"][channel] |= fast
    receipt = data["event_types"]["payment_receipt"]
    receipt["channels"] = ["email", "sms"]
    receipt.pop("escalation", None)
    return data


@asynccontextmanager
async def world(workdir: Path) -> AsyncIterator[World]:
    consumer = Consumer()

    async def handler(received: Received) -> Reply:
        if consumer.mode == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.hang(), HANG_S)
        elif consumer.mode == "slow":
            await asyncio.sleep(0.8)
        elif consumer.mode == "500":
            return 500, {}
        return 200, {}

    consumer.handler = handler
    providers = RecordingProviders()
    smtp = RestartableSmtp()
    await smtp.up()
    with PrivatePostgres() as pg, TansuBroker(parent_dir=workdir) as broker:
        await asyncio.to_thread(migrate.upgrade, pg.url)
        async with (
            serve(consumer.app) as consumer_url,
            serve(providers.app) as providers_url,
        ):
            data = _chaos_config(pg.url, consumer_url, smtp.port, providers_url, broker)
            reader = TopicReader(broker.bootstrap_servers, data["kafka"]["topics"]["client"])
            config_file = workdir / "chaos.toml"
            config_file.write_text(to_toml(data))
            env = service_env(config_file, pg.url)
            port = free_port()
            api = api_process(env, port, workdir / "api.log")
            dispatchers = [
                dispatcher_process(env, f"chaos-{n}", workdir / f"dispatcher-{n}.log")
                for n in (1, 2)
            ]
            base = f"http://127.0.0.1:{port}"
            try:
                api.start()
                for d in dispatchers:
                    d.start()
                await asyncio.to_thread(wait_ready, base, 60.0, api)
                key = await asyncio.to_thread(new_key, pg.url, "shop")
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    for n in range(USERS):
                        contact = {"email": f"u{n}@chaos.test", "phone": f"+1555000{n:04d}"}
                        r = await client.put(f"/v1/users/u{n}", json=contact, headers=bearer(key))
                        assert r.status_code in (200, 201), r.text
                yield World(
                    pg, api, dispatchers, base, key, consumer, providers, smtp, data, broker, reader
                )
            finally:
                for process in [api, *dispatchers]:
                    process.stop(5)
                await smtp.down()


async def run(names: list[str] | None = None, workdir: Path | None = None) -> list[Row]:
    chosen = names or list(FAULTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mn-chaos-") as scratch:
        async with world(workdir or Path(scratch)) as w:
            for name in chosen:
                row = await run_scenario(w, name, FAULTS[name])
                print(format_row(row), flush=True)
                rows.append(row)
    return rows


HEADER = (
    "| fault | load held (req/s) | acknowledged | found | delivered | duplicates delivered "
    "| recovery (s) | notes |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def format_row(row: Row) -> str:
    recovery = "-" if row.recovery_s is None else f"{row.recovery_s:.1f}"
    return (
        f"| {row.fault} | {row.load_rps:.1f} | {row.acknowledged} | {row.found} "
        f"| {row.delivered} | {row.duplicates} | {recovery} | {row.note} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(FAULTS), help="a fault")
    args = parser.parse_args()
    print(HEADER, flush=True)
    rows = asyncio.run(run(args.only))
    lost = sum(r.lost for r in rows)
    undelivered = sum(r.found - r.delivered for r in rows)
    print(f"\nlost (acknowledged, not found): {lost}; found but not delivered: {undelivered}")


if __name__ == "__main__":
    main()
