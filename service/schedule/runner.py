"""A schedule's run: its data from its source, then its event through notify_event().

The dispatcher runs this from the `schedule.run` job that fire_due_schedules() deferred
(for either backend), and `bin/schedules run NAME` runs it in place. One run per schedule
and scheduled time: its row in schedule_runs is taken first (a second worker on the same
run leaves it be), and the event's idempotency key is `schedule:<name>:<time>`, so even a
run made twice (a worker that died and was taken over) sends nothing twice.

A source that fails is tried again, up to [scheduler].max_attempts with
[scheduler].retry_backoff between attempts, each attempt's error written to the run's row
as it happens; a run that still fails is recorded (`failed`, with the error) and the
schedule moves on to its next time. Nothing here raises for a failing source: the
scheduler goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
import psycopg

from service.config.load import Config
from service.metrics import SCHEDULE_RUNS
from service.schedule.sources import Connect, SourceError, fetch
from service.schedule_store import (
    PRODUCER,
    FiredBy,
    RunResult,
    get_schedule,
    idempotency_key,
    next_run,
)
from service.sql import q

log = logging.getLogger(__name__)

# A run left 'running' this long was lost with its worker: another may take it over. Runs
# are bounded well below it (max_attempts x (source_timeout + backoff)).
STALE = timedelta(minutes=15)
ERROR_MAX = 2000

_encode = msgspec.json.Encoder().encode


def _backoff(config: Config, attempt: int) -> float:
    b = config.scheduler.retry_backoff
    delay = b.initial.total_seconds() * b.factor ** (attempt - 1)
    return float(min(delay, b.cap.total_seconds()))


def _trim(error: str) -> str:
    return error if len(error) <= ERROR_MAX else error[: ERROR_MAX - 1] + "…"


async def run_schedule(
    connect: Connect,
    config: Config,
    name: str,
    scheduled_for: datetime,
    fired_by: FiredBy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunResult:
    """Make the run of schedule `name` for `scheduled_for` (see the module docstring)."""
    skipped = RunResult(schedule=name, scheduled_for=scheduled_for, outcome="skipped")
    async with connect() as conn:
        schedule = await get_schedule(conn, name)
        if schedule is None:
            return msgspec.structs.replace(skipped, error="no such schedule")
        if fired_by != "manual" and not schedule.settings.enabled:
            return msgspec.structs.replace(skipped, error="disabled")
        key = {"name": name, "scheduled_for": scheduled_for}
        cur = await conn.execute(
            q("begin_schedule_run"), key | {"fired_by": fired_by, "stale": STALE}
        )
        if await cur.fetchone() is None:
            # Made already (or being made by another worker, which also moves it on).
            await _finish(conn, schedule.settings.cron, schedule.settings.timezone, key)
            return msgspec.structs.replace(skipped, error="made already")

        settings = schedule.settings
        data: dict[str, Any] | None = None
        error: str | None = None
        attempts = 0
        while data is None:
            attempts += 1
            try:
                data = await fetch(settings.source, config, connect)
            except SourceError as exc:
                error = _trim(f"attempt {attempts}: {exc}")
                await conn.execute(
                    q("record_schedule_attempt"), key | {"attempts": attempts, "error": error}
                )
                if not exc.transient or attempts >= config.scheduler.max_attempts:
                    break
                await sleep(_backoff(config, attempts))

        outcome: Literal["sent", "duplicate", "failed"] = "failed"
        event_id: str | None = None
        async with conn.transaction():
            if data is not None:
                # `error` stays that of the last failed attempt, if any: a run that needed
                # retries says why. The scheduled time is there for the templates ("the week
                # of ..."); the source's own field of that name wins.
                event_data = {"scheduled_for": scheduled_for.astimezone(UTC).isoformat()} | data
                try:
                    async with conn.transaction():
                        cur = await conn.execute(
                            q("post_schedule_event"),
                            {
                                "producer": PRODUCER,
                                "idempotency_key": idempotency_key(name, scheduled_for),
                                "event_type": settings.event_type,
                                "recipients": _encode(settings.audience).decode(),
                                "data": _encode(event_data).decode(),
                            },
                        )
                        posted = await cur.fetchone()
                except psycopg.errors.InvalidParameterValue as exc:
                    # notify_event() refused it: an unknown or disabled type, or data its
                    # templates need is missing. The same next time: not retried.
                    error = _trim(f"event refused: {exc}")
                else:
                    assert posted is not None
                    event_id = str(posted[0])
                    outcome = "sent" if posted[2] else "duplicate"
            await _finish(
                conn,
                settings.cron,
                settings.timezone,
                key,
                outcome=outcome,
                error=error,
                attempts=attempts,
                event_id=event_id,
            )
    SCHEDULE_RUNS.labels(name, outcome).inc()
    result = RunResult(
        schedule=name,
        scheduled_for=scheduled_for,
        outcome=outcome,
        attempts=attempts,
        error=error,
        event_id=event_id,
    )
    if outcome == "failed":
        log.warning(
            "schedule %s (%s): failed after %d attempts: %s",
            name,
            scheduled_for.isoformat(),
            attempts,
            error,
        )
    else:
        log.info(
            "schedule %s (%s): %s event %s", name, scheduled_for.isoformat(), outcome, event_id
        )
    return result


async def _finish(
    conn: psycopg.AsyncConnection[Any],
    cron: str,
    timezone: str,
    key: dict[str, Any],
    *,
    outcome: str | None = None,
    error: str | None = None,
    attempts: int = 0,
    event_id: str | None = None,
) -> None:
    # From now, not from the scheduled time: times missed while nothing ran are not made
    # up one by one (the run just made stands for them).
    upcoming = next_run(
        cron, timezone, max(datetime.now(UTC), key["scheduled_for"]), key["scheduled_for"]
    )
    await conn.execute(
        q("finish_schedule_run"),
        key
        | {
            "outcome": outcome,
            "error": error,
            "attempts": attempts,
            "event_id": event_id,
            "next_run_at": upcoming,
        },
    )
