"""The contract between the claim loop and the transports (HTTP, Kafka, and the
notification channels: SMTP, SMS and push providers, inbox).

The loop claims a batch of one consumer's outbox rows and hands it to that consumer's
transport, which returns one Outcome per Delivery; the loop records attempts and decides
retries from the outcomes. Transports never touch the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

OutcomeKind = Literal["delivered", "retry", "failed"]


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
    # Push tokens the provider called invalid (404/410): the loop forgets them.
    invalid_tokens: tuple[str, ...] = ()


class Transport(Protocol):
    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        """Deliver a batch for one consumer; one Outcome per Delivery, in any order."""
        ...

    async def close(self) -> None: ...
