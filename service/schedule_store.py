"""Periodic schedules: their definition, their times, the table that keeps them, and what
a run did.

Core, because two capabilities use it: bin/schedules (service/schedule/schedules_cli.py)
and the admin's schedule pages (service/admin/schedules.py) check, store and report a
schedule with the same functions here, so the command and the panel agree; the runner
(service/schedule/runner.py) and the dispatcher read it too.

A schedule ([schedules.<name>] in the config, or made with bin/schedules) posts an event
of its type to its audience at the times its cron expression names in its time zone. The
times are computed here, with croniter, in the schedule's zone (so 09:00 Europe/Berlin is
09:00 in winter and in summer), and stored as `next_run_at`; the SQL that fires due
schedules (fire_due_schedules()) only compares it with now(). Whichever backend is active
calls that function every minute (service/schedule/backend.py); the run itself is
service/schedule/runner.py.

Config rows follow the file: each start-up (and `bin/schedules sync`) adds, changes and
removes them as it says. Rows made with bin/schedules are the CLI's, and start-ups leave
them alone; the CLI refuses to change the file's rows, which would be undone at the next
start-up.
"""

from __future__ import annotations

import argparse
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import psycopg
from croniter import croniter

from service.config.load import Config
from service.config.schedule import HttpSource, SchedulerBackend, ScheduleSettings
from service.errors import unknown_name
from service.sql import q

# Spelled by fire_due_schedules() in SQL too (pg_cron calls it); tests/unit/test_job_names.py
# holds the two together.
SCHEDULE_QUEUE = "schedule"
RUN_TASK = "schedule.run"
# The producer of every scheduled event: API keys' producer names cannot contain ':', so
# no producer service can post (or read) events under it.
PRODUCER = "mark-notify:schedules"

Origin = Literal["config", "cli"]
FiredBy = Literal["pg_cron", "procrastinate", "manual"]
Outcome = Literal["sent", "duplicate", "failed"]

_encode = msgspec.json.Encoder().encode


class ScheduleError(ValueError):
    """A schedule that cannot be made or changed as asked; the message says why."""


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A row of the schedules table."""

    name: str
    settings: ScheduleSettings
    origin: Origin
    next_run_at: datetime | None
    fired_for: datetime | None
    last_run_at: datetime | None
    last_outcome: Outcome | None
    last_error: str | None


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a run did. `skipped`: nothing to do (the schedule is gone or disabled, or this
    time's run was made or is being made elsewhere)."""

    schedule: str
    scheduled_for: datetime
    outcome: Literal["sent", "duplicate", "failed", "skipped"]
    attempts: int = 0
    error: str | None = None
    event_id: str | None = None


def run_record(result: RunResult) -> dict[str, Any]:
    """What a manual run did, as its audit row's `after` (the admin's Run now and
    `bin/schedules run` alike)."""
    return {
        "scheduled_for": result.scheduled_for,
        "outcome": result.outcome,
        "attempts": result.attempts,
        "error": result.error,
        "event_id": result.event_id,
    }


def next_run(
    cron: str, timezone: str, after: datetime, previous: datetime | None = None
) -> datetime:
    """The first time after `after` that `cron` names in `timezone`, in UTC.

    When clocks go back, croniter names a wall-clock time of the repeated hour twice; the
    second is skipped when it is the wall-clock time of `previous` (the run just made), so
    a daily 02:30 runs once that night, as cron does."""
    zone = zoneinfo.ZoneInfo(timezone)
    times = croniter(cron, after.astimezone(zone))
    seen = previous.astimezone(zone).replace(tzinfo=None) if previous else None
    while True:
        at: datetime = times.get_next(datetime)
        if at.replace(tzinfo=None) != seen:
            return at.astimezone(UTC)


def redacted(settings: ScheduleSettings) -> dict[str, Any]:
    """The settings as the audit log keeps them (the admin panel's and bin/schedules'): an
    HTTP source's headers often carry a credential, so they are named without values."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    if isinstance(settings.source, HttpSource):
        data["source"]["headers"] = {k: "(hidden)" for k in settings.source.headers}
    return data


def idempotency_key(name: str, scheduled_for: datetime) -> str:
    """The event's key: one event per schedule and scheduled time, however often it runs."""
    return f"schedule:{name}:{scheduled_for.astimezone(UTC).isoformat()}"


def _row(row: tuple[Any, ...]) -> Schedule:
    (name, cron, timezone, event_type, audience, source, enabled, origin, description) = row[:9]
    settings = msgspec.convert(
        {
            "cron": cron,
            "timezone": timezone,
            "event_type": event_type,
            "audience": audience,
            "source": source,
            "enabled": enabled,
            "description": description,
        },
        ScheduleSettings,
    )
    next_run_at, fired_for, last_run_at, last_outcome, last_error = row[9:]
    return Schedule(
        name=name,
        settings=settings,
        origin=origin,
        next_run_at=next_run_at,
        fired_for=fired_for,
        last_run_at=last_run_at,
        last_outcome=last_outcome,
        last_error=last_error,
    )


def _definition(settings: ScheduleSettings, now: datetime) -> dict[str, Any]:
    """A definition as the schedules table's columns take it (and sync_config_schedules()'s
    JSON), with the next time from `now`."""
    return {
        "cron": settings.cron,
        "timezone": settings.timezone,
        "event_type": settings.event_type,
        "audience": _encode(settings.audience).decode(),
        "source": _encode(settings.source).decode(),
        "enabled": settings.enabled,
        "description": settings.description,
        "next_run_at": next_run(settings.cron, settings.timezone, now),
    }


def edited_settings(args: argparse.Namespace, current: ScheduleSettings | None) -> ScheduleSettings:
    """The settings `bin/schedules add` or `set` asks for (for `set`, over the current
    ones); the admin's schedule form is read as these arguments too."""
    base: dict[str, Any] = msgspec.to_builtins(current) if current else {}
    for key in ("cron", "timezone", "event_type", "description"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if args.topic is not None:
        base["audience"] = {"topic": args.topic}
    elif args.all:
        base["audience"] = {"all": True}
    elif args.user_id:
        base["audience"] = {"user_ids": args.user_id}
    if args.data is not None:
        try:
            base["source"] = {"kind": "static", "data": msgspec.json.decode(args.data)}
        except msgspec.DecodeError as exc:
            raise ScheduleError(f"--data: not JSON: {exc}") from None
    elif args.sql is not None:
        base["source"] = {"kind": "sql", "query": args.sql, "shape": args.shape or "rows"}
    elif args.url is not None:
        headers = dict(h.split(":", 1) for h in args.header or [] if ":" in h)
        base["source"] = {
            "kind": "http",
            "url": args.url,
            "headers": {k.strip(): v.strip() for k, v in headers.items()},
        }
    elif args.shape and base.get("source", {}).get("kind") == "sql":
        base["source"]["shape"] = args.shape
    if getattr(args, "disabled", False):
        base["enabled"] = False
    try:
        return msgspec.convert(base, ScheduleSettings)
    except msgspec.ValidationError as exc:
        raise ScheduleError(str(exc)) from None


async def check_event_type(conn: psycopg.AsyncConnection[Any], event_type: str) -> None:
    cur = await conn.execute(q("schedule_event_types"))
    names = [row[0] for row in await cur.fetchall()]
    if event_type not in names:
        raise ScheduleError(
            unknown_name("event type", event_type, names) + " in the catalog (the config's "
            "[event_types], mirrored into the database when the service starts)"
        )


async def list_schedules(conn: psycopg.AsyncConnection[Any]) -> list[Schedule]:
    cur = await conn.execute(q("list_schedules"))
    return [_row(r) for r in await cur.fetchall()]


async def get_schedule(conn: psycopg.AsyncConnection[Any], name: str) -> Schedule | None:
    cur = await conn.execute(q("get_schedule"), {"name": name})
    row = await cur.fetchone()
    return _row(row) if row else None


async def add_schedule(
    conn: psycopg.AsyncConnection[Any], name: str, settings: ScheduleSettings
) -> Schedule:
    """A new CLI-made schedule; ScheduleError if the name is taken."""
    params = _definition(settings, datetime.now(UTC)) | {"name": name}
    cur = await conn.execute(q("insert_schedule"), params)
    if await cur.fetchone() is None:
        raise ScheduleError(f"a schedule named {name!r} exists (change it with `set`)")
    added = await get_schedule(conn, name)
    assert added is not None
    return added


async def update_schedule(
    conn: psycopg.AsyncConnection[Any], name: str, settings: ScheduleSettings
) -> Schedule:
    """Replace a CLI-made schedule's definition (set, enable, disable)."""
    current = await get_schedule(conn, name)
    _check_cli_owned(name, current)
    params = _definition(settings, datetime.now(UTC)) | {"name": name}
    cur = await conn.execute(q("update_schedule"), params)
    if await cur.fetchone() is None:
        raise ScheduleError(f"no schedule named {name!r}")
    updated = await get_schedule(conn, name)
    assert updated is not None
    return updated


async def remove_schedule(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    _check_cli_owned(name, await get_schedule(conn, name))
    await conn.execute(q("delete_schedule"), {"name": name})


def _check_cli_owned(name: str, schedule: Schedule | None) -> None:
    if schedule is None:
        raise ScheduleError(f"no schedule named {name!r}")
    if schedule.origin == "config":
        raise ScheduleError(
            f"schedule {name!r} is declared in the config file ([schedules.{name}]): change "
            "it there (start-ups and `bin/schedules sync` make the table follow the file)"
        )


async def sync_config_schedules(
    conn: psycopg.AsyncConnection[Any], schedules: Mapping[str, ScheduleSettings]
) -> list[tuple[str, str]]:
    """Make the table's config rows what the file declares; (name, change) for each row
    added, changed, taken over from the CLI or removed."""
    now = datetime.now(UTC)
    declared = {
        name: _definition(s, now) | {"audience": s.audience, "source": s.source}
        for name, s in schedules.items()
    }
    cur = await conn.execute(q("sync_config_schedules"), {"declared": _encode(declared).decode()})
    return [(str(name), str(change)) for name, change in await cur.fetchall()]


def check_event_types(config: Config) -> None:
    """Config schedules name configured event types (a typo fails start-up, not each run)."""
    for name, schedule in config.schedules.items():
        if schedule.event_type not in config.event_types:
            raise ScheduleError(
                f"schedules.{name}.event_type: "
                + unknown_name("event type", schedule.event_type, config.event_types)
            )


async def fire_due(conn: psycopg.AsyncConnection[Any], via: SchedulerBackend) -> int:
    """Defer the runs of the due schedules if `via` is the active backend; how many."""
    cur = await conn.execute(q("fire_due_schedules"), {"via": via})
    row = await cur.fetchone()
    return int(row[0]) if row else 0
