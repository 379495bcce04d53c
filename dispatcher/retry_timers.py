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
        # (due time (monotonic), the buckets the retried rows are in), soonest first.
        self._due: list[tuple[float, tuple[int, ...]]] = []

    def arm(self, now: float, delays: Sequence[float], buckets: Sequence[int] = ()) -> bool:
        """Wake at the soonest of these retries, and at the latest, so that a spread-out
        batch does not wait for the sweep; True if there were any. `buckets`: where the
        rows are, for the claim to look there first."""
        if not delays:
            return False
        heapq.heappush(self._due, (now + min(delays), tuple(buckets)))
        heapq.heappush(self._due, (now + max(delays), tuple(buckets)))
        return True

    def drop_due(self, now: float) -> list[tuple[int, ...]]:
        """Forget the timers that have fired (a claim now takes their rows); returns their
        buckets, soonest first."""
        fired: list[tuple[int, ...]] = []
        while self._due and self._due[0][0] <= now:
            buckets = heapq.heappop(self._due)[1]
            if buckets not in fired:
                fired.append(buckets)
        return fired

    def wait(self, now: float, longest: float) -> float:
        """Seconds until the next timer (0 if one has fired), at most `longest` (the
        sweep)."""
        if self._due:
            return max(0.0, min(longest, self._due[0][0] - now))
        return longest
