"""The configuration's building blocks: names, durations of retry and breaking, the
delivery policy every outbox destination has, and the error a wrong file raises.

The Structs of the sections are in this module's siblings (core.py, seen.py, notify.py,
schedule.py, admin.py), put together by load.py; this module is what they all share.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import msgspec

ROOT = Path(__file__).resolve().parents[2]

EventType = Literal["client", "driver", "anonymous"]
EVENT_TYPES: tuple[EventType, ...] = ("client", "driver", "anonymous")
Transport = Literal["http", "kafka"]
Environment = Literal["development", "test", "production"]

# `\Z`, not `$`: Python's `$` also matches before a final newline.
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(ValueError):
    pass


# Secrets that are public, so never valid outside development: config/example.toml's
# ("dev-...") and the placeholders of config/compose.env.example ("REPLACE-ME").
DEV_SECRET_PREFIX = "dev-"  # noqa: S105 (a marker that refuses dev secrets, not a secret)
PLACEHOLDER = "REPLACE-ME"


def refuse_unsafe_secret(setting: str, secret: str | None, environment: str | None) -> None:
    """The one rule for every secret: outside environment = "development", neither a
    development secret nor a placeholder (also inside a whsec_ key's base64). `environment`
    None: not told, not checked."""
    if not secret or environment in (None, "development"):
        return
    texts = [secret]
    if secret.startswith("whsec_"):
        try:
            texts.append(base64.b64decode(secret[6:] + "==").decode(errors="replace"))
        except binascii.Error:
            pass  # not base64: the signer refuses it on its own
    if any(PLACEHOLDER in text.upper() for text in texts):
        raise ConfigError(
            f"{setting}: still the {PLACEHOLDER} placeholder; set a real secret "
            "(placeholders pass only with environment = development)"
        )
    if secret.startswith(DEV_SECRET_PREFIX):
        raise ConfigError(f"{setting}: a development secret outside environment=development")


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
