"""Inbox transport: the in-app inbox is this database, so delivering is listing.

An inbox row is delivered when the claim loop completes it; GET /v1/inbox lists the
notifications whose inbox row is delivered (rendered when read). Going through the outbox
gives the inbox what every channel has: send_at, quiet hours, ttl and the attempts table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from dispatcher.transport_base import Delivery, Outcome, Transport


class InboxTransport(Transport):
    async def deliver(self, consumer: str, batch: Sequence[Delivery]) -> list[Outcome]:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        took = (time.perf_counter() - t0) * 1000.0
        return [Outcome(d.outbox_id, "delivered", started_at, took) for d in batch]

    async def close(self) -> None:
        return None
