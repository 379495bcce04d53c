"""Kafka transport: each seen fact becomes one JSON message on its event type's topic.

The value is the consumer-facing event of service/seen/seen_wire.py (documented by the JSON
Schemas in docs/kafka/); the key is the subject (Delivery.ordering_key), so the default
partitioner keeps one subject's marks on one partition, in order. A Delivery counts as
delivered only once the broker acknowledged it with acks=all.

One producer is shared by every Kafka consumer and every concurrent deliver() call. It is
started lazily, and thrown away when the broker failed to acknowledge (gone, connection
lost, fenced), so that an outage never leaves a wedged producer behind (an idempotent
producer retries forever and loses its sequence state when the broker restarts); the next
deliver() starts a fresh one. deliver() always returns within request_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedForMessageFormatError,
)

from dispatcher.transport_base import Delivery, Outcome, OutcomeKind, Transport
from service.config.base import EVENT_TYPES, EventType
from service.config.core import KafkaSettings
from service.config.seen import Consumer
from service.seen.seen_wire import seen_event

log = logging.getLogger(__name__)

CLIENT_ID = "mark-notify-dispatcher"

# Errors about the message itself: sending it again cannot help.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
)

# Errors about one topic (missing, not allowed): the producer itself is fine, and
# replacing it would only disturb the other consumers' batches in flight.
TOPIC_ERRORS: tuple[type[BaseException], ...] = (
    UnknownTopicOrPartitionError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
)

_encode = msgspec.json.Encoder().encode


class MessageError(ValueError):
    """A Delivery that cannot become a Kafka message (bad payload, no topic)."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def topic_for(settings: KafkaSettings, consumer: Consumer, event_type: EventType) -> str:
    if consumer.topic:
        return consumer.topic
    topic = settings.topics.get(event_type)
    if not topic:
        raise MessageError(f"no topic configured for event type {event_type!r} ([kafka.topics])")
    return topic


def build_message(settings: KafkaSettings, consumer: Consumer, delivery: Delivery) -> Message:
    """The Kafka message for one outbox row; MessageError if it cannot be built."""
    raw_type = delivery.payload.get("event_type")
    if raw_type not in EVENT_TYPES:
        raise MessageError(f"payload has no known event_type: {raw_type!r}")
    event_type = cast(EventType, raw_type)
    try:
        event = seen_event(delivery.event_id, delivery.payload)
    except msgspec.ValidationError as exc:
        raise MessageError(f"payload does not match the {event_type} event: {exc}") from None
    # Lets consumers route or deduplicate without parsing the value.
    headers = [("event-type", event_type.encode()), ("event-id", event.event_id.encode())]
    if delivery.trace is not None:
        # W3C Trace Context over Kafka, as its Kafka binding drafts it: a `traceparent` header.
        headers.append(("traceparent", delivery.trace.traceparent.encode()))
    return Message(
        topic=topic_for(settings, consumer, event_type),
        key=delivery.ordering_key.encode(),
        value=_encode(event),
        headers=headers,
    )


def describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PERMANENT_ERRORS)


class KafkaTransport(Transport):
    """The Transport of every consumer with transport = "kafka"."""

    def __init__(self, settings: KafkaSettings, consumers: dict[str, Consumer]) -> None:
        self._settings = settings
        self._consumers = consumers
        self._timeout = settings.request_timeout.total_seconds()
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        outcomes: dict[int, Outcome] = {}

        def outcome(d: Delivery, kind: OutcomeKind, error: str | None, at: float) -> None:
            outcomes[d.outbox_id] = Outcome(
                outbox_id=d.outbox_id,
                kind=kind,
                started_at=started_at,
                duration_ms=(at - t0) * 1000,
                error=error,
            )

        config = self._consumers.get(consumer)
        messages: list[tuple[Delivery, Message]] = []
        # Oldest first, so that one subject's marks reach its partition in creation order.
        for d in sorted(batch, key=lambda d: d.outbox_id):
            if config is None:
                outcome(d, "failed", f"no kafka consumer named {consumer!r}", t0)
                continue
            try:
                messages.append((d, build_message(self._settings, config, d)))
            except MessageError as exc:
                outcome(d, "failed", str(exc), time.monotonic())
        if not messages:
            return list(outcomes.values())

        futures: dict[int, asyncio.Future[Any]] = {}
        acked_at: dict[int, float] = {}
        producer: Any = None
        unsent_error = "not sent"
        # Whether this producer looks broken (broker gone, connection lost, fenced): then
        # it is replaced, which an idempotent producer needs to get out of an outage.
        broken = False
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._get_producer()
                for d, m in messages:
                    try:
                        future = await producer.send(m.topic, m.value, key=m.key, headers=m.headers)
                    except PERMANENT_ERRORS as exc:
                        outcome(d, "failed", describe(exc), time.monotonic())
                        continue
                    future.add_done_callback(_stamp(acked_at, d.outbox_id))
                    futures[d.outbox_id] = future
                # Everything is queued before anything is awaited, so the batch goes out
                # in as few produce requests as the producer's batching allows.
                if futures:
                    await asyncio.wait(futures.values())
        except TimeoutError:
            unsent_error = f"no acknowledgement from the broker within {self._timeout:g} s"
            # Stuck in send() (waiting for a topic's metadata) is a topic problem; sent
            # messages left unacknowledged are the broker's.
            broken = producer is None or any(not f.done() for f in futures.values())
        except KafkaError as exc:
            # Start-up (broker down) or a send the producer refused: the rest is not sent,
            # since sending later marks of a subject past a missing one would reorder them.
            unsent_error = describe(exc)
            broken = not isinstance(exc, TOPIC_ERRORS)

        now = time.monotonic()
        for d, _ in messages:
            if d.outbox_id in outcomes:
                continue
            future = futures.get(d.outbox_id)
            if future is None or not future.done() or future.cancelled():
                # Unsent or unacknowledged: it may still reach the broker later (a
                # duplicate after the retry, which consumers drop by event_id), but it is
                # not delivered until an acknowledgement says so.
                outcome(d, "retry", unsent_error, now)
            elif (error := future.exception()) is None:
                outcome(d, "delivered", None, acked_at.get(d.outbox_id, now))
            elif is_permanent(error):
                outcome(d, "failed", describe(error), acked_at.get(d.outbox_id, now))
            else:
                broken = broken or not isinstance(error, TOPIC_ERRORS)
                outcome(d, "retry", describe(error), acked_at.get(d.outbox_id, now))
        if broken:
            self._retire(producer)
        return list(outcomes.values())

    async def _get_producer(self) -> Any:
        async with self._lock:
            if self._closed:
                raise KafkaError("the transport is closed")
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._settings.bootstrap_servers,
                    client_id=CLIENT_ID,
                    acks="all",
                    enable_idempotence=self._settings.enable_idempotence,
                    linger_ms=self._settings.linger_ms,
                    request_timeout_ms=int(self._timeout * 1000),
                )
                try:
                    await producer.start()
                except BaseException:
                    self._spawn_stop(producer)
                    raise
                self._producer = producer
                log.info("kafka producer started (%s)", self._settings.bootstrap_servers)
            return self._producer

    def _retire(self, producer: Any) -> None:
        """Stop using this producer (if it is still the current one); stop it in the background."""
        # No lock: a producer being started holds it for up to the timeout, and this
        # check-and-clear cannot interleave with anything (no await).
        if producer is None or self._producer is not producer:
            return
        self._producer = None
        log.warning("kafka producer discarded after a failed delivery; the next starts anew")
        self._spawn_stop(producer)

    def _spawn_stop(self, producer: Any) -> None:
        task = asyncio.create_task(_stop(producer))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            self._spawn_stop(producer)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


def _stamp(acked_at: dict[int, float], outbox_id: int) -> Any:
    def done(future: asyncio.Future[Any]) -> None:
        acked_at[outbox_id] = time.monotonic()
        # Read the outcome even when nobody awaits it any more (after a timeout), so
        # asyncio does not log "exception was never retrieved".
        if not future.cancelled():
            future.exception()

    return done


async def _stop(producer: Any) -> None:
    # stop() flushes first, and an idempotent producer's batches never expire, so with the
    # broker gone it would wait forever: fail what is still queued (those rows are already
    # reported as "retry") so that stop() only has to close the connections.
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(KafkaTimeoutError("producer discarded"))
    try:
        await producer.stop()
    except Exception as exc:
        log.warning("stopping a kafka producer: %s", describe(exc))
