"""An optional per-consumer request rate: a token bucket holding at most one second's worth."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, wanted: int) -> int:
        """Wait for at least one token, then take up to `wanted` whole tokens."""
        self._refill()
        while self._tokens < 1.0:
            await asyncio.sleep((1.0 - self._tokens) / self.rate)
            self._refill()
        got = min(wanted, math.floor(self._tokens))
        self._tokens -= got
        return got

    def refund(self, unused: int) -> None:
        if unused > 0:
            self._refill()
            self._tokens = min(self.capacity, self._tokens + unused)
