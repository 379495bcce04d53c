"""Retry policy: which results are worth retrying, and how long to wait before the next try.

Backoff is exponential with equal jitter: with b = min(cap, initial * factor**(n-1)), the
delay before attempt n+1 is uniform in [b/2, b]. The jitter spreads rows failing together
so they do not hammer a recovering consumer in step; the floor keeps the schedule
predictable for consumers (full jitter could retry 20 ms after a failure). A Retry-After
from the consumer is a floor too (bounded by the cap, so a consumer cannot park rows
indefinitely). docs/delivery.md publishes the default schedule: `schedule()`.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from dispatcher.transport_base import Delivery, Outcome, OutcomeKind
from service.config.base import Backoff

# Long enough for a stack trace's last line or a short response body, short enough that
# attempt rows stay small for analysts.
ERROR_LIMIT = 500


def classify_status(status: int) -> OutcomeKind:
    """2xx delivered; 408, 429 and 5xx transient; any other status a permanent refusal."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "failed"


def backoff_bound(backoff: Backoff, attempt: int) -> float:
    """The largest delay, in seconds, after failed attempt number `attempt` (1-based)."""
    cap = backoff.cap.total_seconds()
    initial = backoff.initial.total_seconds()
    try:
        grown = initial * backoff.factor ** max(0, attempt - 1)
    except OverflowError:
        return cap
    return min(cap, grown)


def retry_delay(
    backoff: Backoff,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt `attempt` before the next one."""
    bound = backoff_bound(backoff, attempt)
    delay = (rng or _rng).uniform(bound / 2, bound)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, backoff.cap.total_seconds()))
    return delay


def schedule(backoff: Backoff, attempts: int) -> list[tuple[int, float, float]]:
    """(failed attempt n, shortest, longest delay before attempt n+1), for n = 1..attempts,
    without Retry-After."""
    return [
        (n, backoff_bound(backoff, n) / 2, backoff_bound(backoff, n))
        for n in range(1, attempts + 1)
    ]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    # isdigit() alone is true of "²" and other Unicode digits float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def trim_error(text: str, limit: int = ERROR_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Jitter needs no cryptographic quality.
_rng = random.Random()  # noqa: S311


def timed_outcome(
    delivery: Delivery,
    kind: OutcomeKind,
    started_at: datetime,
    t0: float,
    *,
    status: int | None = None,
    error: str | None = None,
    retry_after: float | None = None,
) -> Outcome:
    """The outcome of an attempt that started at `t0` (time.perf_counter()), its error
    trimmed for the attempts table."""
    return Outcome(
        delivery.outbox_id,
        kind,
        started_at,
        (time.perf_counter() - t0) * 1000.0,
        status_code=status,
        error=trim_error(error) if error else None,
        retry_after=retry_after,
    )


def undeliverable(delivery: Delivery, error: str) -> Outcome:
    """A row that cannot be sent at all (its payload or rendering is wrong): a permanent
    failure for ops to look at, decided before anything was sent."""
    return Outcome(delivery.outbox_id, "failed", datetime.now(UTC), 0.0, error=trim_error(error))
