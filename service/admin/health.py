"""Each consumer's and channel's health in one word: healthy, degraded, failing or paused.

The rules live here and only here (`judge()`); the consumers page, the dashboard's health
table, its cards and its "needs attention" strip all read the same verdicts. Each reason
a verdict gives is also a strip item, with the link to the list that shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from service.config.load import Config
from service.ops import controls
from service.sql import q

# The thresholds (docs/admin.md, "Health"). Severity order: worst last.
WORDS = ("healthy", "degraded", "failing")
# Share of the last hour's attempts delivered, judged only from this many attempts on.
MIN_ATTEMPTS = 3
DEGRADED_SUCCESS = 0.95
FAILING_SUCCESS = 0.50
# How long the oldest due row has waited past its time.
DEGRADED_LAG_S = 60.0
FAILING_LAG_S = 600.0


@dataclass(frozen=True)
class Reason:
    """Why a consumer is not healthy: a strip item and the list that shows it."""

    severity: str  # "degraded", "failing" or "paused"
    name: str
    short: str
    href: str

    @property
    def text(self) -> str:
        return f"{self.name}: {self.short}"


@dataclass(frozen=True)
class Health:
    """One consumer's or channel's state, as the tables say it now."""

    name: str
    kind: str
    paused: bool
    status: str | None
    breaker: str
    consecutive_failures: int
    opened_at: datetime | None
    attempts: int
    delivered: int
    last_error: str | None
    last_error_at: datetime | None
    last_error_code: int | None
    pending: int
    due: int
    in_flight: int
    oldest_pending_at: datetime | None
    oldest_due_at: datetime | None
    failed: int
    dead: int
    now: datetime

    @property
    def dead_letters(self) -> int:
        return self.failed + self.dead

    @property
    def success(self) -> float | None:
        return self.delivered / self.attempts if self.attempts else None

    @property
    def lag_s(self) -> float | None:
        """How long the oldest due row has waited past its time."""
        if self.oldest_due_at is None:
            return None
        return max(0.0, (self.now - self.oldest_due_at).total_seconds())

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return judge(self)[1]

    @property
    def word(self) -> str:
        return judge(self)[0]


def _deliveries(name: str, **extra: str) -> str:
    return "/admin/deliveries?" + urlencode({"consumer": name, **extra})


def lag_word(lag_s: float | None) -> str:
    """The backlog's verdict from the oldest due row's wait alone (the dashboard's card)."""
    if lag_s is None or lag_s <= DEGRADED_LAG_S:
        return "healthy"
    return "failing" if lag_s > FAILING_LAG_S else "degraded"


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def judge(h: Health) -> tuple[str, tuple[Reason, ...]]:
    """The one word for a consumer or channel, and every reason that made it so.

    paused: an operator paused it, or the config disables it (its rows wait on purpose);
    failing: breaker open, under FAILING_SUCCESS delivered, or a due row waiting more than
    FAILING_LAG_S; degraded: breaker half open, under DEGRADED_SUCCESS delivered, any dead
    letter, or a due row waiting more than DEGRADED_LAG_S; else healthy."""
    name = h.name
    here = f"/admin/consumers#c-{quote(name, safe='')}"
    reasons: list[Reason] = []
    paused = h.paused or h.status == "disabled"
    if h.paused:
        reasons.append(Reason("paused", name, "paused, its rows wait", here))
    elif h.status == "disabled":
        reasons.append(Reason("paused", name, "disabled in the config", here))
    if h.breaker == "open":
        reasons.append(
            Reason("failing", name, f"breaker open ({h.consecutive_failures} failures)", here)
        )
    elif h.breaker == "half_open":
        reasons.append(Reason("degraded", name, "breaker half open", here))
    if h.success is not None and h.attempts >= MIN_ATTEMPTS and h.success < DEGRADED_SUCCESS:
        severity = "failing" if h.success < FAILING_SUCCESS else "degraded"
        short = f"{h.success * 100:.0f} % of {h.attempts} attempts delivered, last hour"
        reasons.append(Reason(severity, name, short, _deliveries(name)))
    if h.dead_letters:
        letters = "dead letter" + ("" if h.dead_letters == 1 else "s")
        reasons.append(
            Reason(
                "degraded",
                name,
                f"{h.dead_letters} {letters} waiting",
                _deliveries(name, status="dead_letters"),
            )
        )
    lag = h.lag_s
    if not paused and lag_word(lag) != "healthy" and lag is not None:
        reasons.append(
            Reason(
                lag_word(lag),
                name,
                f"oldest due row waiting {_minutes(lag)}",
                _deliveries(name, status="pending"),
            )
        )
    if paused:
        return "paused", tuple(reasons)
    worst = max((WORDS.index(r.severity) for r in reasons), default=0)
    return WORDS[worst], tuple(reasons)


def _kind(name: str, config: Config) -> str:
    if name in config.consumers:
        return "consumer"
    if name in config.channels:
        return "channel"
    return "not configured"


async def health_rows(conn: AsyncConnection[Any], config: Config) -> list[Health]:
    """Every configured consumer and channel, then whatever else the tables know of."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("admin_consumers_state"))
    states = {r["consumer"]: r for r in await cur.fetchall()}
    await cur.execute(q("admin_outbox_backlog"))
    backlog = {r["consumer"]: r for r in await cur.fetchall()}
    names = [*sorted(config.consumers), *sorted(config.channels)]
    names += sorted((set(states) | set(backlog)) - set(names))
    attempts = {}
    for name in names:
        await cur.execute(q("admin_consumer_attempts"), {"consumer": name})
        attempts[name] = await cur.fetchone() or {}
    paused = await controls.paused_consumers(conn)
    now = datetime.now(UTC)
    rows = []
    for name in names:
        state = states.get(name) or {}
        left = backlog.get(name) or {}
        tried = attempts.get(name) or {}
        rows.append(
            Health(
                name=name,
                kind=_kind(name, config),
                paused=name in paused,
                status=state.get("status"),
                breaker=state.get("breaker") or "closed",
                consecutive_failures=int(state.get("consecutive_failures") or 0),
                opened_at=state.get("opened_at"),
                attempts=int(tried.get("attempts") or 0),
                delivered=int(tried.get("delivered") or 0),
                last_error=tried.get("last_error") or state.get("last_error"),
                last_error_at=tried.get("last_error_at") if tried.get("last_error") else None,
                last_error_code=tried.get("last_error_code"),
                pending=int(left.get("pending") or 0),
                due=int(left.get("due") or 0),
                in_flight=int(left.get("in_flight") or 0),
                oldest_pending_at=left.get("oldest_pending_at"),
                oldest_due_at=left.get("oldest_due_at"),
                failed=int(left.get("failed") or 0),
                dead=int(left.get("dead") or 0),
                now=now,
            )
        )
    return rows
