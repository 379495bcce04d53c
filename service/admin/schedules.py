"""Schedules in the admin: list, create, edit, enable/disable, run now, run history.

Everything goes through the code bin/schedules uses, so the panel and the command agree:
a form becomes the arguments `bin/schedules add/set` would parse and is validated and
stored by the same functions (service/schedule_store.py, in the core), and "run now" is
the runner `bin/schedules run` calls, made here in the request through the process
State (service/state.py's ScheduleActions, so this package never imports
service/schedule/). Schedules declared in the config file can be run but not changed
here, as with the command.
"""

from __future__ import annotations

import argparse
import zoneinfo
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec
from psycopg.rows import dict_row
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.admin.sessions import Session
from service.admin.web import action, page, pool_of, problem, record, redirect, refuse, render
from service.config.schedule import HttpSource, SqlSource, StaticSource
from service.schedule_store import (
    Schedule,
    ScheduleError,
    add_schedule,
    check_event_type,
    edited_settings,
    get_schedule,
    list_schedules,
    next_run,
    redacted,
    run_record,
    update_schedule,
)
from service.sql import q
from service.state import state_of
from service.text_rules import is_safe

UPCOMING = 3
LAST_RUNS = 3
HISTORY = 100
MAX_SCHEDULE_NAME = 200
FIELDS = (
    "name", "description", "cron", "timezone", "event_type", "audience", "topic",
    "user_ids", "source", "data", "query", "shape", "url", "headers", "enabled",
)  # fmt: skip
DONE = {
    "created": "Schedule created.",
    "updated": "Schedule saved.",
    "enabled": "Schedule enabled: it runs at its next time.",
    "disabled": "Schedule disabled: it does not run until enabled.",
}


def upcoming(schedule: Schedule, count: int = UPCOMING) -> list[datetime]:
    """The schedule's next times: its stored next_run_at (the one the scheduler fires),
    then the following ones as the runner computes each after a run."""
    if not schedule.settings.enabled or schedule.next_run_at is None:
        return []
    times = [schedule.next_run_at]
    while len(times) < count:
        times.append(
            next_run(schedule.settings.cron, schedule.settings.timezone, times[-1], times[-1])
        )
    return times


def _local(at: datetime, timezone: str) -> dict[str, str]:
    local = at.astimezone(zoneinfo.ZoneInfo(timezone))
    return {
        "local": local.strftime("%a %Y-%m-%d %H:%M"),
        "utc": at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
    }


def _audience(schedule: Schedule) -> str:
    audience = schedule.settings.audience
    if audience.topic is not None:
        return f"topic {audience.topic}"
    if audience.all:
        return "all users"
    ids = audience.user_ids or []
    return (
        f"{len(ids)} user{'s' if len(ids) != 1 else ''}: "
        + ", ".join(ids[:10])
        + (", …" if len(ids) > 10 else "")
    )


def _view(schedule: Schedule) -> dict[str, Any]:
    source = schedule.settings.source
    return {
        "name": schedule.name,
        "origin": schedule.origin,
        "s": schedule.settings,
        "audience": _audience(schedule),
        "source_kind": source.__struct_config__.tag,
        "source_text": (
            msgspec.json.encode(source.data).decode()
            if isinstance(source, StaticSource)
            else source.query
            if isinstance(source, SqlSource)
            else source.url
        ),
        "source_shape": source.shape if isinstance(source, SqlSource) else None,
        "header_names": sorted(source.headers) if isinstance(source, HttpSource) else [],
        "next": [_local(t, schedule.settings.timezone) for t in upcoming(schedule)],
        "last_run_at": schedule.last_run_at,
        "last_outcome": schedule.last_outcome,
        "last_error": schedule.last_error,
    }


def _values_of(schedule: Schedule) -> dict[str, str]:
    """A schedule as its edit form shows it (header values are not shown; left empty,
    they stay as they are)."""
    s = schedule.settings
    audience = s.audience
    values = dict.fromkeys(FIELDS, "") | {
        "name": schedule.name,
        "description": s.description,
        "cron": s.cron,
        "timezone": s.timezone,
        "event_type": s.event_type,
        "audience": "topic"
        if audience.topic is not None
        else "all"
        if audience.all
        else "user_ids",
        "topic": audience.topic or "",
        "user_ids": "\n".join(audience.user_ids or []),
        "enabled": "on" if s.enabled else "",
        "shape": "rows",
    }
    if isinstance(s.source, StaticSource):
        values |= {"source": "static", "data": msgspec.json.encode(s.source.data).decode()}
    elif isinstance(s.source, SqlSource):
        values |= {"source": "sql", "query": s.source.query, "shape": s.source.shape}
    else:
        values |= {"source": "http", "url": s.source.url}
    return values


def _form_values(form: FormData) -> dict[str, str]:
    values = {}
    for key in FIELDS:
        raw = form.get(key)
        values[key] = raw if isinstance(raw, str) else ""
    return values


def _arguments(
    values: dict[str, str], *, adding: bool, current: Schedule | None = None
) -> argparse.Namespace:
    """The form as the arguments of `bin/schedules add` (adding) or `set`, so that the
    command's own validation (schedule_store.edited_settings) judges it."""
    audience, source = values["audience"], values["source"]
    headers = [line for line in values["headers"].splitlines() if line.strip()]
    if (
        not headers
        and current is not None
        and isinstance(current.settings.source, HttpSource)
        and source == "http"
    ):
        headers = [f"{k}: {v}" for k, v in current.settings.source.headers.items()]
    return argparse.Namespace(
        cron=values["cron"].strip() or None,
        timezone=values["timezone"].strip() or None,
        event_type=values["event_type"].strip() or None,
        description=values["description"].strip(),
        topic=values["topic"].strip() if audience == "topic" else None,
        all=audience == "all",
        user_id=values["user_ids"].replace(",", " ").split() if audience == "user_ids" else None,
        data=(values["data"].strip() or "{}") if source == "static" else None,
        sql=values["query"] if source == "sql" else None,
        url=values["url"].strip() if source == "http" else None,
        shape=values["shape"] or None,
        header=headers,
        disabled=adding and not values["enabled"],
    )


async def _refresh_jobs(request: Request) -> None:
    """Under pg_cron, its jobs follow the change at once, as after bin/schedules."""
    await state_of(request).schedules.refresh_jobs()


def _form(
    request: Request,
    who: Session,
    values: dict[str, str],
    *,
    adding: bool,
    error: str | None = None,
    header_names: list[str] | None = None,
) -> Response:
    types = sorted(state_of(request).config.event_types)
    if values["event_type"] and values["event_type"] not in types:
        types.append(values["event_type"])
    title = "New schedule" if adding else f"Edit schedule {values['name']}"
    context = {
        "title": title,
        "v": values,
        "adding": adding,
        "event_types": types,
        "error": error,
        "header_names": header_names or [],
    }
    return render(request, who, "schedule_form.html", context, status=400 if error else 200)


@page("manager")
async def schedules_page(request: Request, who: Session) -> Response:
    async with pool_of(request).connection() as conn:
        schedules = await list_schedules(conn)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_schedules_last_runs"), {"per_schedule": LAST_RUNS})
        runs = await cur.fetchall()
    last: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        last.setdefault(run["schedule"], []).append(run)
    rows = [_view(s) | {"runs": last.get(s.name, [])} for s in schedules]
    return render(request, who, "schedules.html", {"title": "Schedules", "rows": rows})


@page("manager")
async def new_form(request: Request, who: Session) -> Response:
    values = dict.fromkeys(FIELDS, "") | {
        "timezone": "UTC",
        "audience": "topic",
        "source": "static",
        "shape": "rows",
        "enabled": "on",
    }
    return _form(request, who, values, adding=True)


@action("manager")
async def create(request: Request, who: Session, form: FormData) -> Response:
    values = _form_values(form)
    name = values["name"].strip()
    try:
        if not name:
            raise ScheduleError("name: a schedule needs a name")
        # The name is a path segment of its page and shown in logs and the audit log.
        if not is_safe(name, MAX_SCHEDULE_NAME, segment=True):
            raise ScheduleError(
                f"name: at most {MAX_SCHEDULE_NAME} characters, no '/' or control characters"
            )
        settings = edited_settings(_arguments(values, adding=True), None)
        async with pool_of(request).connection() as conn, conn.transaction():
            await check_event_type(conn, settings.event_type)
            added = await add_schedule(conn, name, settings)
            await record(
                conn, request, who, "schedule.create", name, after=redacted(added.settings)
            )
    except ScheduleError as exc:
        return _form(request, who, values, adding=True, error=str(exc))
    await _refresh_jobs(request)
    return redirect(f"/admin/schedules/{quote(name, safe='')}?done=created")


async def _schedule_or_404(
    request: Request, who: Session
) -> tuple[Schedule | None, Response | None]:
    name = request.path_params["name"]
    async with pool_of(request).connection() as conn:
        schedule = await get_schedule(conn, name)
    if schedule is None:
        return None, problem(request, who, 404, f"There is no schedule named {name!r}.")
    return schedule, None


@page("manager")
async def detail(request: Request, who: Session) -> Response:
    name = request.path_params["name"]
    async with pool_of(request).connection() as conn:
        schedule = await get_schedule(conn, name)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("admin_schedule_runs"), {"name": name, "limit": HISTORY})
        runs = await cur.fetchall()
    if schedule is None and not runs:
        return problem(request, who, 404, f"There is no schedule named {name!r}.")
    done = request.query_params.get("done", "")
    notice = DONE.get(done)
    error = None
    if done == "run":
        try:
            at = datetime.fromisoformat(request.query_params.get("at", ""))
        except ValueError:
            at = None
        run = next((r for r in runs if r["scheduled_for"] == at), None)
        if run is None:
            notice = "Run now: nothing done (a run of that second was made already)."
        else:
            text = f"Run now: {run['outcome']}" + (
                f", event {run['event_id']}" if run["event_id"] else ""
            )
            if run["outcome"] == "failed":
                error = f"{text}: {run['error']}"
            else:
                notice = text
    context = {
        "title": f"Schedule {name}",
        "sched": _view(schedule) if schedule else None,
        "name": name,
        "runs": runs,
        "notice": notice,
        "error": error,
    }
    return render(request, who, "schedule.html", context)


@page("manager")
async def edit_form(request: Request, who: Session) -> Response:
    schedule, missing = await _schedule_or_404(request, who)
    if schedule is None:
        assert missing is not None
        return missing
    names = _view(schedule)["header_names"]
    return _form(request, who, _values_of(schedule), adding=False, header_names=names)


@action("manager")
async def edit(request: Request, who: Session, form: FormData) -> Response:
    schedule, missing = await _schedule_or_404(request, who)
    if schedule is None:
        assert missing is not None
        return missing
    values = _form_values(form) | {"name": schedule.name}
    try:
        settings = edited_settings(
            _arguments(values, adding=False, current=schedule), schedule.settings
        )
        async with pool_of(request).connection() as conn, conn.transaction():
            await check_event_type(conn, settings.event_type)
            done = await update_schedule(conn, schedule.name, settings)
            await record(
                conn,
                request,
                who,
                "schedule.update",
                schedule.name,
                before=redacted(schedule.settings),
                after=redacted(done.settings),
            )
    except ScheduleError as exc:
        names = _view(schedule)["header_names"]
        return _form(request, who, values, adding=False, error=str(exc), header_names=names)
    await _refresh_jobs(request)
    return redirect(f"/admin/schedules/{quote(schedule.name, safe='')}?done=updated")


async def _switch(request: Request, who: Session, enabled: bool) -> Response:
    schedule, missing = await _schedule_or_404(request, who)
    if schedule is None:
        assert missing is not None
        return missing
    verb = "enable" if enabled else "disable"
    try:
        async with pool_of(request).connection() as conn, conn.transaction():
            settings = msgspec.structs.replace(schedule.settings, enabled=enabled)
            done = await update_schedule(conn, schedule.name, settings)
            await record(
                conn,
                request,
                who,
                f"schedule.{verb}",
                schedule.name,
                before={"enabled": schedule.settings.enabled, "next_run_at": schedule.next_run_at},
                after={"enabled": done.settings.enabled, "next_run_at": done.next_run_at},
            )
    except ScheduleError as exc:
        return await refuse(request, who, 409, str(exc))
    await _refresh_jobs(request)
    return redirect(f"/admin/schedules/{quote(schedule.name, safe='')}?done={verb}d")


@action("manager")
async def enable(request: Request, who: Session, form: FormData) -> Response:
    return await _switch(request, who, True)


@action("manager")
async def disable(request: Request, who: Session, form: FormData) -> Response:
    return await _switch(request, who, False)


@action("manager")
async def run_now(request: Request, who: Session, form: FormData) -> Response:
    schedule, missing = await _schedule_or_404(request, who)
    if schedule is None:
        assert missing is not None
        return missing
    pool = pool_of(request)
    # As `bin/schedules run`: a manual run's time is the second it was asked for.
    now = datetime.now(UTC).replace(microsecond=0)
    result = await state_of(request).schedules.run_now(schedule.name, now)
    # The run commits its own transactions as it goes (its row first, then the event), so
    # its audit row follows it, saying what it did.
    async with pool.connection() as conn:
        await record(
            conn,
            request,
            who,
            "schedule.run",
            schedule.name,
            after=run_record(result),
        )
    at = quote(result.scheduled_for.isoformat(), safe="")
    return redirect(f"/admin/schedules/{quote(schedule.name, safe='')}?done=run&at={at}")


ROUTES = [
    Route("/schedules", schedules_page, methods=["GET"]),
    Route("/schedules/new", new_form, methods=["GET"]),
    Route("/schedules/new", create, methods=["POST"]),
    Route("/schedules/{name}", detail, methods=["GET"]),
    Route("/schedules/{name}/edit", edit_form, methods=["GET"]),
    Route("/schedules/{name}/edit", edit, methods=["POST"]),
    Route("/schedules/{name}/enable", enable, methods=["POST"]),
    Route("/schedules/{name}/disable", disable, methods=["POST"]),
    Route("/schedules/{name}/run", run_now, methods=["POST"]),
]
