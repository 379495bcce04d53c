"""A consumer loop's own wake-ups for the retries it scheduled.

A retried row becomes claimable at its due time; without a timer the loop would find it
only at the next sweep. How long a retry waits is dispatcher/retry.py's; this only
remembers when to look again.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


class RetryTimers:
    def __init__(self) -> None:
        # Due times (monotonic), soonest first.
        self._due: list[float] = []

    def arm(self, now: float, delays: Sequence[float]) -> bool:
        """Wake at the soonest of these retries, and at the latest, so that a spread-out
        batch does not wait for the sweep; True if there were any."""
        if not delays:
            return False
        heapq.heappush(self._due, now + min(delays))
        heapq.heappush(self._due, now + max(delays))
        return True

    def drop_due(self, now: float) -> None:
        """Forget the timers that have fired: a claim now takes their rows."""
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)

    def wait(self, now: float, longest: float) -> float:
        """Seconds until the next timer, at most `longest` (the sweep)."""
        self.drop_due(now)
        if self._due:
            return max(0.0, min(longest, self._due[0] - now))
        return longest
