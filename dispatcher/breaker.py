"""A circuit breaker per consumer: stop claiming rows for a consumer that keeps failing.

Closed: claim normally. After `failures` transient failures in a row (timeouts, 5xx,
connection errors, with no success in between) it opens: nothing is claimed for
`cooldown`, so rows keep their retry budget instead of burning it against a dead
consumer. Then it is half-open: one row is claimed as a probe; success closes it, failure
opens it again for twice as long (up to `max_cooldown`). A permanent refusal (4xx) shows
the consumer is alive and counts as a success here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from service.config.base import Breaker

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, settings: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.state: BreakerState = "closed"
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self._cooldown = settings.cooldown.total_seconds()
        self._reopen_at = 0.0

    def ready_in(self) -> float:
        """Seconds until rows may be claimed (0: now). Moves open to half-open when due."""
        if self.state != "open":
            return 0.0
        left = self._reopen_at - self._clock()
        if left > 0:
            return left
        self.state = "half_open"
        return 0.0

    def claim_limit(self, batch_size: int, concurrency: int) -> int:
        """How many rows to risk in the next batch."""
        if self.state == "half_open":
            return 1
        if self.failures:
            # A consumer that just failed gets one round of requests, not a whole batch of
            # timeouts, until it proves itself again.
            return max(1, min(batch_size, concurrency))
        return batch_size

    def record(self, successes: int, failures: int, error: str | None = None) -> bool:
        """Account for one batch; True when the state changed (worth publishing)."""
        before = (self.state, self.failures > 0)
        if successes:
            self.failures = 0
            self.state = "closed"
            self.opened_at = None
            self._cooldown = self._settings.cooldown.total_seconds()
        elif failures:
            self.failures += failures
            self.last_error = error
            if self.state == "half_open":
                self._cooldown = min(
                    self._cooldown * 2, self._settings.max_cooldown.total_seconds()
                )
                self._open()
            elif self.state == "closed" and self.failures >= self._settings.failures:
                self._open()
        return (self.state, self.failures > 0) != before

    def _open(self) -> None:
        self.state = "open"
        self.opened_at = self._clock()
        self._reopen_at = self.opened_at + self._cooldown
