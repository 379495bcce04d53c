"""The configuration's building blocks: names, durations of retry and breaking, the
delivery policy every outbox destination has, and the error a wrong file raises.

The Structs of the sections are in service/config.py (and its siblings
config_notify.py, config_schedule.py); this module is what they all share.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import msgspec

ROOT = Path(__file__).resolve().parent.parent

EventType = Literal["client", "driver", "anonymous"]
EVENT_TYPES: tuple[EventType, ...] = ("client", "driver", "anonymous")
Transport = Literal["http", "kafka"]
Environment = Literal["development", "test", "production"]

# `\Z`, not `$`: Python's `$` also matches before a final newline.
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(ValueError):
    pass


class Backoff(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Delay before attempt n+1: half of min(cap, initial * factor**(n-1)), plus up to the
    other half at random (equal jitter: never sooner than half the bound)."""

    initial: timedelta = timedelta(seconds=1)
    factor: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    cap: timedelta = timedelta(minutes=10)


class Breaker(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Pauses a consumer after `failures` transient failures in a row, then probes it with
    one row after `cooldown` (doubling per failed probe, up to `max_cooldown`)."""

    failures: Positive = 5
    cooldown: timedelta = timedelta(seconds=30)
    max_cooldown: timedelta = timedelta(minutes=5)


class DeliveryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the dispatcher treats one outbox destination (a seen consumer or a channel):
    timeouts, retry budget, concurrency, rate limit and circuit breaker."""

    timeout: timedelta = timedelta(seconds=5)
    max_attempts: Positive | None = None
    max_age: timedelta | None = None
    backoff: Backoff = Backoff()
    concurrency: Positive = 16
    rate_limit: Annotated[float, msgspec.Meta(gt=0)] | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500
    enabled: bool = True
    ordered: bool = False
    breaker: Breaker = Breaker()
