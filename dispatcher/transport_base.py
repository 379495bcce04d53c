"""The contract between the claim loop and the transports (HTTP, Kafka, and the
notification channels: SMTP, SMS and push providers, inbox, Web Push).

The loop (dispatcher/loop.py) claims a batch of one consumer's outbox rows and hands it to
that consumer's transport, which returns one Outcome per Delivery; the loop records
attempts and decides retries from the outcomes. `deliver` never touches the database; a
transport with follow-up work on a batch's outcomes (push: forget the devices a provider
called invalid) does it in `after_batch`, before the batch is completed. Transports
subclass `Transport` to inherit the hook's default, which does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from service.tracing import TraceContext

OutcomeKind = Literal["delivered", "retry", "failed"]
Pool = AsyncConnectionPool[AsyncConnection[Any]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed outbox row."""

    outbox_id: int
    event_id: str
    consumer: str
    ordering_key: str
    payload: dict[str, Any]
    attempt: int  # 1 for the first attempt
    created_at: datetime
    # This attempt's span: a child of the traceparent stored with the row (service/tracing.py),
    # sent on as the `traceparent` header.
    trace: TraceContext | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    outbox_id: int
    kind: OutcomeKind  # "failed" is permanent: no retry
    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    # Seconds the consumer asked us to wait (HTTP Retry-After), if any.
    retry_after: float | None = None
    # The provider that took (or last refused) the attempt, for channels that fail over.
    provider: str | None = None
    # Push tokens the provider called invalid, or Web Push endpoints their push service
    # called gone (404/410): the transport's after_batch forgets them.
    invalid_tokens: tuple[str, ...] = ()


class Transport(Protocol):
    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        """Deliver a batch for one consumer; one Outcome per Delivery, in any order."""
        ...

    async def after_batch(
        self, consumer: str, batch: Sequence[Delivery], outcomes: Sequence[Outcome], pool: Pool
    ) -> None:
        """Follow-up work on a delivered batch (one Outcome per Delivery), on the loop's
        pool; errors the loop should survive are the transport's to catch and log."""
        return None

    async def close(self) -> None: ...


attempt_log = logging.getLogger("dispatcher.attempts")


def log_attempts(consumer: str, batch: Sequence[Delivery], outcomes: Sequence[Outcome]) -> None:
    """One line per delivery attempt, with the trace it continues. Never the payload or
    the contact: only ids, the outcome and the error (scrubbed by service/logs.py)."""
    if not attempt_log.isEnabledFor(logging.INFO):
        return
    by_id = {d.outbox_id: d for d in batch}
    for outcome in outcomes:
        delivery = by_id.get(outcome.outbox_id)
        trace = delivery.trace if delivery is not None else None
        fields: dict[str, Any] = {
            "consumer": consumer,
            "outbox_id": outcome.outbox_id,
            "event_id": delivery.event_id if delivery is not None else None,
            "attempt": delivery.attempt if delivery is not None else None,
            "outcome": outcome.kind,
            "status_code": outcome.status_code,
            "duration_ms": round(outcome.duration_ms, 3),
            "trace_id": trace.trace_id if trace is not None else None,
            "span_id": trace.span_id if trace is not None else None,
        }
        if outcome.provider is not None:
            fields["provider"] = outcome.provider
        if outcome.error is not None:
            fields["error"] = outcome.error
        attempt_log.log(
            logging.INFO if outcome.kind == "delivered" else logging.WARNING,
            "%s: outbox row %d attempt %s %s",
            consumer,
            outcome.outbox_id,
            fields["attempt"],
            outcome.kind,
            extra=fields,
        )
