"""HTTP transport: one Standard Webhooks signed POST per outbox row.

Each consumer gets its own keep-alive connection pool and its own concurrency limit, so a
slow consumer only ever occupies its own connections. The body is the consumer-facing
event Struct of service/seen/seen_wire.py (the shapes docs/consumer-api.yaml publishes); the
`webhook-id` is the row's event id, the same on every retry, so consumers can deduplicate.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache

import msgspec
from standardwebhooks import Webhook

from dispatcher.http_wire import WebhookPool, WireError, WireTimeout
from dispatcher.retry import (
    classify_status,
    parse_retry_after,
    timed_outcome,
    undeliverable,
)
from dispatcher.transport_base import Delivery, Outcome, Transport
from service.config.seen import Consumer
from service.seen.seen_wire import seen_event

USER_AGENT = "mark-notify-dispatcher/1"
_encode = msgspec.json.Encoder().encode


@cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA store costs tens of milliseconds; every client shares one context.
    return ssl.create_default_context()


class _Target:
    def __init__(self, consumer: Consumer) -> None:
        assert consumer.url is not None and consumer.secret is not None
        self.timeout = consumer.timeout.total_seconds()
        self.signer = Webhook(consumer.secret)
        self.slots = asyncio.Semaphore(consumer.concurrency)
        # One keep-alive pool per consumer, as wide as its concurrency, so a slow consumer
        # only ever holds its own connections (dispatcher/http_wire.py says why not httpx).
        self.pool = WebhookPool(
            consumer.url,
            consumer.concurrency,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            tls=_tls_context() if consumer.url.startswith("https:") else None,
        )

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            body = _encode(seen_event(delivery.event_id, delivery.payload))
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            # A payload no consumer could be sent is a permanent failure for ops to look
            # at, never a crash of the loop.
            return undeliverable(delivery, f"undeliverable payload: {exc}")
        # Signed only once a connection slot is ours, so webhook-timestamp is fresh even
        # for the tail of a large batch (consumers reject stale timestamps).
        async with self.slots:
            started_at = datetime.now(UTC)
            t0 = time.perf_counter()
            headers = {
                "webhook-id": delivery.event_id,
                "webhook-timestamp": str(int(started_at.timestamp())),
                "webhook-signature": self.signer.sign(delivery.event_id, started_at, body.decode()),
            }
            if delivery.trace is not None:
                headers["traceparent"] = delivery.trace.traceparent
            try:
                # Bounds the whole exchange, so a consumer trickling bytes cannot hold a
                # row past the claim's lease.
                response = await self.pool.post(headers, body, self.timeout)
            except WireTimeout:
                return timed_outcome(delivery, "retry", started_at, t0, error="timeout")
            except WireError as exc:
                return timed_outcome(delivery, "retry", started_at, t0, error=str(exc))
        kind = classify_status(response.status)
        if kind == "delivered":
            return timed_outcome(delivery, kind, started_at, t0, status=response.status)
        return timed_outcome(
            delivery,
            kind,
            started_at,
            t0,
            status=response.status,
            error=f"HTTP {response.status}: {response.body.decode('utf-8', 'replace')}",
            retry_after=parse_retry_after(response.headers.get("retry-after"))
            if kind == "retry"
            else None,
        )


class HttpTransport(Transport):
    """Delivers for every consumer whose transport is "http"."""

    def __init__(self, consumers: Mapping[str, Consumer]) -> None:
        self._targets = {
            name: _Target(consumer)
            for name, consumer in consumers.items()
            if consumer.transport == "http"
        }

    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        target = self._targets[consumer]
        return list(await asyncio.gather(*(target.send(d) for d in batch)))

    async def close(self) -> None:
        for target in self._targets.values():
            await target.pool.close()
