"""The dispatcher's Prometheus metrics, served on a port of its own
(`[dispatcher].metrics_port`, `GET /metrics`).

A dispatcher is one process, so its counters need no multiprocess mode: they live in
this process and are read at each scrape. The database's state (backlog, due rows,
oldest pending age, dead letters, Procrastinate's queues, notifications per type) is
read here too, by a few cheap queries run at scrape time (sql/core/queries/metrics.sql), and
never by the API: its workers would each export the same figures. Every dispatcher
exports them, identical, so aggregate them with max(), never sum()
(docs/observability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dispatcher.transport_base import Outcome
from service.metrics import LATENCY_BUCKETS, PREFIX, SCHEDULE_RUNS
from service.notify.fanout import MATERIALIZE_QUEUE
from service.schedule_store import SCHEDULE_QUEUE
from service.sql import q
from service.wake import WAKE_QUEUE

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[Any]]
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
QUEUES = (WAKE_QUEUE, MATERIALIZE_QUEUE, SCHEDULE_QUEUE)
# Scrapes closer together than this share one reading of the database.
DB_MAX_AGE_S = 1.0
DB_TIMEOUT_S = 5.0
# Long enough for the database reading and its own timeout.
REQUEST_TIMEOUT_S = 2 * DB_TIMEOUT_S

DELIVERIES = Counter(
    PREFIX + "deliveries",
    "Delivery attempts completed, by consumer (or channel) and outcome: delivered, retry, "
    "failed (refused for good) or dead (attempts or age ran out).",
    ["consumer", "outcome"],
    registry=None,
)
ATTEMPT_DURATION = Histogram(
    PREFIX + "delivery_attempt_duration_seconds",
    "Duration of one delivery attempt, by consumer (or channel).",
    ["consumer"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
BREAKER_OPENS = Counter(
    PREFIX + "breaker_opens",
    "Times a consumer's circuit breaker opened (from closed or half-open).",
    ["consumer"],
    registry=None,
)

_deliveries: dict[tuple[str, str], Any] = {}
_durations: dict[str, Any] = {}


def count_deliveries(consumer: str, outcomes: Iterable[str]) -> None:
    for outcome, n in Tally(outcomes).items():
        counter = _deliveries.get((consumer, outcome))
        if counter is None:
            counter = _deliveries[(consumer, outcome)] = DELIVERIES.labels(consumer, outcome)
        counter.inc(n)


def observe_attempts(consumer: str, outcomes: Sequence[Outcome]) -> None:
    histogram = _durations.get(consumer)
    if histogram is None:
        histogram = _durations[consumer] = ATTEMPT_DURATION.labels(consumer)
    for outcome in outcomes:
        histogram.observe(outcome.duration_ms / 1000.0)


def breaker_opened(consumer: str) -> None:
    BREAKER_OPENS.labels(consumer).inc()


class DatabaseReading:
    """The database's side of the metrics, read at scrape time (at most once per
    DB_MAX_AGE_S, however many scrapers ask)."""

    def __init__(self, pool: Pool, destinations: Sequence[str]) -> None:
        self._pool = pool
        self._destinations = destinations
        self._lock = asyncio.Lock()
        self._read_at = -DB_MAX_AGE_S
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.up = False

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < DB_MAX_AGE_S:
                return
            names = (
                "metrics_outbox_pending",
                "metrics_dead_letters",
                "metrics_job_queues",
                "metrics_notifications",
            )
            try:
                async with asyncio.timeout(DB_TIMEOUT_S), self._pool.connection() as conn:
                    rows = {}
                    for name in names:
                        cur = await conn.execute(q(name))
                        rows[name] = await cur.fetchall()
            except (TimeoutError, PoolTimeout, psycopg.Error) as exc:
                # Stale figures would look current: export none, and say so.
                log.warning("metrics: could not read the database: %s", exc)
                self.rows, self.up = {}, False
            else:
                self.rows, self.up = rows, True
            self._read_at = time.monotonic()

    def families(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily(
            PREFIX + "metrics_database_up",
            "1 if the last scrape could read the database-side metrics below, else 0.",
        )
        up.add_metric([], 1 if self.up else 0)
        yield up
        if not self.up:
            return
        pending = GaugeMetricFamily(
            PREFIX + "outbox_pending",
            "Pending outbox rows (queued, held or being retried), by consumer or channel.",
            labels=["consumer"],
        )
        due = GaugeMetricFamily(
            PREFIX + "outbox_due",
            "Pending outbox rows due now, by consumer or channel.",
            labels=["consumer"],
        )
        oldest = GaugeMetricFamily(
            PREFIX + "outbox_oldest_pending_age_seconds",
            "Age of the oldest row still owed to its consumer or channel (0: none).",
            labels=["consumer"],
        )
        overdue = GaugeMetricFamily(
            PREFIX + "outbox_oldest_due_age_seconds",
            "How long the oldest due row has waited past its due time (0: none).",
            labels=["consumer"],
        )
        # Consumers with nothing pending are 0, not absent: an alert or graph on an absent
        # series sees nothing at all.
        by_consumer = {name: (0, 0, 0.0, 0.0) for name in self._destinations}
        for consumer, *figures in self.rows["metrics_outbox_pending"]:
            by_consumer[consumer] = tuple(figures)
        for consumer, (n_pending, n_due, age, late) in sorted(by_consumer.items()):
            pending.add_metric([consumer], n_pending)
            due.add_metric([consumer], n_due)
            oldest.add_metric([consumer], age)
            overdue.add_metric([consumer], late)
        yield from (pending, due, oldest, overdue)

        dead = GaugeMetricFamily(
            PREFIX + "outbox_dead_letters",
            "Dead letters kept (status failed: refused for good; dead: attempts or age ran "
            "out), by consumer or channel.",
            labels=["consumer", "status"],
        )
        letters = {(name, s): 0 for name in self._destinations for s in ("failed", "dead")}
        letters |= {(c, s): n for c, s, n in self.rows["metrics_dead_letters"]}
        for (consumer, status), n in sorted(letters.items()):
            dead.add_metric([consumer, status], n)
        yield dead

        jobs = GaugeMetricFamily(
            PREFIX + "jobs",
            "Procrastinate jobs by queue and status (todo: waiting; doing: running).",
            labels=["queue", "status"],
        )
        queued = {(queue, s): 0 for queue in QUEUES for s in ("todo", "doing")}
        queued |= {(queue, s): n for queue, s, n in self.rows["metrics_job_queues"]}
        for (queue, status), n in sorted(queued.items()):
            jobs.add_metric([queue, status], n)
        yield jobs

        made = CounterMetricFamily(
            PREFIX + "notifications",
            "Notifications made so far, by event type (from the events' counts).",
            labels=["type"],
        )
        for event_type, n in sorted(self.rows["metrics_notifications"]):
            made.add_metric([event_type], n)
        yield made


class _StateCollector(Collector):
    """What is read at scrape time: the breakers, the buckets held, and the database's
    reading."""

    def __init__(
        self,
        reading: DatabaseReading,
        breakers: Callable[[], Mapping[str, str]],
        buckets: Callable[[], Mapping[str, int]],
    ):
        self._reading = reading
        self._breakers = breakers
        self._buckets = buckets

    def collect(self) -> Iterator[Any]:
        breaker = GaugeMetricFamily(
            PREFIX + "breaker_state",
            "A consumer's circuit breaker in this dispatcher: 0 closed, 1 half-open, 2 open.",
            labels=["consumer"],
        )
        for consumer, state in sorted(self._breakers().items()):
            breaker.add_metric([consumer], BREAKER_VALUES[state])
        yield breaker
        held = GaugeMetricFamily(
            PREFIX + "buckets_held",
            "Buckets of a consumer this dispatcher holds and claims from "
            "(dispatcher/bucket_leases.py); over all dispatchers they add up to 64.",
            labels=["consumer"],
        )
        for consumer, n in sorted(self._buckets().items()):
            held.add_metric([consumer], n)
        yield held
        yield from self._reading.families()


def registry_for(
    reading: DatabaseReading,
    breakers: Callable[[], Mapping[str, str]],
    buckets: Callable[[], Mapping[str, int]] = dict,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    for metric in (DELIVERIES, ATTEMPT_DURATION, BREAKER_OPENS, SCHEDULE_RUNS):
        registry.register(metric)
    registry.register(_StateCollector(reading, breakers, buckets))
    # process_* (CPU, resident memory, open files) of this dispatcher.
    ProcessCollector(registry=registry)
    return registry


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reading: DatabaseReading,
    registry: CollectorRegistry,
) -> None:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = head.split(b"\r\n", 1)[0].split(b" ")
            if method in (b"GET", b"HEAD") and target.split(b"?", 1)[0] == b"/metrics":
                await reading.refresh()
                status, media = b"200 OK", CONTENT_TYPE_LATEST.encode()
                body = generate_latest(registry)
            else:
                status, media, body = b"404 Not Found", b"text/plain", b"GET /metrics\n"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + media
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (body if method != b"HEAD" else b"")
            )  # fmt: skip
            await writer.drain()
    except (
        TimeoutError,
        ValueError,
        ConnectionError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
    ):
        # A scraper that hung up or sent garbage gets nothing; the dispatcher goes on.
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def exporter(
    host: str,
    port: int,
    pool: Pool,
    destinations: Sequence[str],
    breakers: Callable[[], Mapping[str, str]],
    buckets: Callable[[], Mapping[str, int]] = dict,
) -> AsyncIterator[None]:
    """Serve GET /metrics on host:port while inside (port 0: no exporter). A port taken
    by another process costs the metrics, never the deliveries: it is logged."""
    server: asyncio.Server | None = None
    if port:
        reading = DatabaseReading(pool, destinations)
        registry = registry_for(reading, breakers, buckets)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _answer(reader, writer, reading, registry)

        try:
            server = await asyncio.start_server(answer, host, port)
        except OSError as exc:
            log.warning("metrics: cannot listen on %s:%d (%s); serving no metrics", host, port, exc)
        else:
            log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
