"""A consumer's circuit breaker, and its state published to consumer_state.

The claim loop asks the breaker how long to hold claims back and how many rows to risk,
and reports each batch's outcomes; every change of state (open, half-open, closed, first
failure) is written to the consumer_state table, which the admin's consumers page reads
(sql/admin/queries/consumers.sql). The writes run beside the loop, never in its way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import PoolTimeout

from dispatcher import dispatcher_metrics as metrics
from dispatcher import outbox
from dispatcher.breaker import CircuitBreaker
from dispatcher.transport_base import Outcome, Pool
from service.config.base import Breaker

log = logging.getLogger(__name__)


class ConsumerState:
    def __init__(self, name: str, settings: Breaker, pool: Pool, *, dispatcher: str) -> None:
        self.name = name
        self.pool = pool
        self.dispatcher = dispatcher
        self.breaker = CircuitBreaker(settings)
        self._publishing: set[asyncio.Task[None]] = set()
        self._publish_lock = asyncio.Lock()

    def paused(self) -> float:
        """Seconds the breaker still holds claims back; publishes open -> half-open."""
        state = self.breaker.state
        paused = self.breaker.ready_in()
        if self.breaker.state != state:
            log.info("consumer %s: circuit half-open, probing with one row", self.name)
            self._spawn_publish()
        return paused

    def claim_limit(self, batch_size: int, concurrency: int) -> int:
        return self.breaker.claim_limit(batch_size, concurrency)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Account for one batch's outcomes; publishes the state if it changed."""
        failures = [o for o in outcomes if o.kind == "retry"]
        successes = len(outcomes) - len(failures)
        error = failures[0].error if failures else None
        if self.breaker.record(successes, len(failures), error):
            if self.breaker.state == "open":
                metrics.breaker_opened(self.name)
                log.warning(
                    "consumer %s: circuit open after %d failures in a row (last: %s); "
                    "paused, probing in %.1f s",
                    self.name,
                    self.breaker.failures,
                    error,
                    self.breaker.ready_in(),
                )
            elif self.breaker.state == "closed" and not self.breaker.failures:
                log.info("consumer %s: circuit closed, delivering again", self.name)
            self._spawn_publish()

    def _spawn_publish(self) -> None:
        task = asyncio.create_task(self.publish())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def flush(self) -> None:
        """Wait for state updates still being written."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)

    async def publish(self) -> None:
        # Serialised, and each write takes the state as it is when it runs: the last write
        # is always the current state, whatever order the triggers came in.
        async with self._publish_lock:
            await self._write_state()

    async def _write_state(self) -> None:
        breaker = self.breaker
        opened_at = None
        if breaker.opened_at is not None:
            opened_at = datetime.now(UTC) - timedelta(seconds=time.monotonic() - breaker.opened_at)
        try:
            await outbox.save_consumer_state(
                self.pool,
                self.name,
                status="active",
                breaker=breaker.state,
                failures=breaker.failures,
                opened_at=opened_at,
                last_error=breaker.last_error if breaker.failures else None,
                dispatcher=self.dispatcher,
            )
        except (PoolTimeout, psycopg.Error) as exc:
            log.warning("consumer %s: could not publish its state: %s", self.name, exc)
