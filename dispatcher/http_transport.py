"""HTTP transport: one Standard Webhooks signed POST per outbox row.

Each consumer gets its own keep-alive connection pool and its own concurrency limit, so a
slow consumer only ever occupies its own connections. The body is the consumer-facing
event Struct of service/messages.py (the shapes docs/consumer-api.yaml publishes); the
`webhook-id` is the row's event id, the same on every retry, so consumers can deduplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import httpx
import msgspec
from standardwebhooks import Webhook

from dispatcher.retry import classify_status, parse_retry_after, trim_error
from dispatcher.transport import Delivery, Outcome, OutcomeKind
from service.config import Consumer
from service.messages import seen_event

USER_AGENT = "mark-notify-dispatcher/1"
_encode = msgspec.json.Encoder().encode


class _Target:
    def __init__(self, consumer: Consumer) -> None:
        assert consumer.url is not None and consumer.secret is not None
        self.url = consumer.url
        self.timeout = consumer.timeout.total_seconds()
        self.signer = Webhook(consumer.secret)
        self.slots = asyncio.Semaphore(consumer.concurrency)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(
                max_connections=consumer.concurrency,
                max_keepalive_connections=consumer.concurrency,
            ),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
            follow_redirects=False,
        )

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            body = _encode(seen_event(delivery.event_id, delivery.payload))
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            # A payload no consumer could be sent is a permanent failure for ops to look
            # at, never a crash of the loop.
            return Outcome(
                delivery.outbox_id,
                "failed",
                datetime.now(UTC),
                0.0,
                error=trim_error(f"undeliverable payload: {exc}"),
            )
        async with self.slots:
            started_at = datetime.now(UTC)
            t0 = time.perf_counter()
            headers = {
                "webhook-id": delivery.event_id,
                "webhook-timestamp": str(int(started_at.timestamp())),
                "webhook-signature": self.signer.sign(delivery.event_id, started_at, body.decode()),
            }
            try:
                # httpx's timeout applies per read; this bounds the whole exchange, so a
                # consumer trickling bytes cannot hold a row past the claim's lease.
                async with asyncio.timeout(self.timeout):
                    response = await self.client.post(self.url, content=body, headers=headers)
            except (TimeoutError, httpx.TimeoutException):
                return self._outcome(delivery, "retry", started_at, t0, error="timeout")
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                return self._outcome(delivery, "retry", started_at, t0, error=error)
        kind = classify_status(response.status_code)
        if kind == "delivered":
            return self._outcome(delivery, kind, started_at, t0, status=response.status_code)
        return self._outcome(
            delivery,
            kind,
            started_at,
            t0,
            status=response.status_code,
            error=f"HTTP {response.status_code}: {response.text}",
            retry_after=parse_retry_after(response.headers.get("retry-after"))
            if kind == "retry"
            else None,
        )

    @staticmethod
    def _outcome(
        delivery: Delivery,
        kind: OutcomeKind,
        started_at: datetime,
        t0: float,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> Outcome:
        return Outcome(
            delivery.outbox_id,
            kind,
            started_at,
            (time.perf_counter() - t0) * 1000.0,
            status_code=status,
            error=trim_error(error) if error else None,
            retry_after=retry_after,
        )


class HttpTransport:
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
            await target.client.aclose()
