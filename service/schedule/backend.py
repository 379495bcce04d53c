"""The backend that runs scheduled work: pg_cron where the database has it, else the
dispatchers' Procrastinate periodic tasks. Exactly one is active (docs/scheduler.md).

Both run the same SQL: fire_due_schedules() (every minute: defer the runs of due
schedules, which a dispatcher then makes), flush_digests() (every minute) and
prune_retention() (on [scheduler].retention_cron).

- pg_cron: one job per enabled schedule, one for the digest flush and one for retention,
  kept in pg_cron's database (`cron.database_name`) with cron.schedule_in_database()
  (pg_cron >= 1.4) so that they run in ours, named `mark-notify:<database>:<what>`. pg_cron
  reads cron expressions in UTC, and a schedule's time zone is not UTC in general (nor is
  its offset constant), so a schedule's job ticks every minute and fires the schedule
  only once its next_run_at (croniter, in its zone) has come: one truth for the times
  whichever backend runs, and a tick missed while pg_cron was down is made up one
  minute later instead of a week later. Runs are in cron.job_run_details.
- procrastinate: the dispatchers' periodic tasks do the same on [scheduler].tick; a tick
  is deferred once however many dispatchers run.

`sync()` chooses at start-up (the dispatcher's) and on `bin/schedules sync`:
[scheduler].backend "auto" takes pg_cron when it is preloaded, created and usable by our
role and falls back otherwise, saying why; "pg_cron" insists (start-up fails if it is not
there, naming the grants a role that is not a superuser lacks); "procrastinate" never asks
pg_cron anything, unless pg_cron was the backend before and its jobs must go. The choice
is saved in scheduler_state, which every tick of either backend checks, and the jobs of
the other backend are removed, so a switch leaves one backend running. /readyz, the logs
and `bin/schedules status` show it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
from typing import Any, Literal

import msgspec
import psycopg

from service.config.load import Config
from service.config.schedule import SchedulerBackend
from service.database import CONNECTION_OPTIONS, with_dbname
from service.schedule import retention
from service.schedule_store import check_event_types, list_schedules, sync_config_schedules
from service.sql import q

log = logging.getLogger(__name__)

JOB_PREFIX = "mark-notify:"
# pg_cron's job names are of type `name`: longer ones would be cut, and could collide.
JOB_NAME_MAX = 63
EVERY_MINUTE = "* * * * *"


class SchedulerUnavailable(Exception):
    """[scheduler].backend = "pg_cron", and pg_cron cannot be used; the message says why."""


class SchedulerState(msgspec.Struct, frozen=True, kw_only=True):
    """The active backend, as scheduler_state keeps it."""

    backend: SchedulerBackend
    detail: str
    chosen_by: str
    updated_at: datetime


class PgCron(msgspec.Struct, frozen=True, kw_only=True):
    """pg_cron, usable: the database that keeps its jobs, and its version."""

    database: str
    version: str


class CronJob(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    schedule: str
    command: str


class CronJobRun(msgspec.Struct, frozen=True, kw_only=True):
    """One of our pg_cron jobs, with its last run in cron.job_run_details."""

    name: str
    schedule: str
    active: bool
    status: str | None
    message: str | None
    started_at: datetime | None
    runs: int


class SyncReport(msgspec.Struct, frozen=True, kw_only=True):
    backend: SchedulerBackend
    detail: str
    # (schedule, 'added' | 'changed' | 'taken over' | 'removed') of the config's schedules.
    changes: list[tuple[str, str]]
    # pg_cron jobs added or changed, and removed.
    scheduled: list[str]
    unscheduled: list[str]


def job_name(database: str, what: str) -> str:
    """`mark-notify:<database>:<what>`, or its head and a hash when that is too long."""
    name = f"{JOB_PREFIX}{database}:{what}"
    raw = name.encode()
    if len(raw) <= JOB_NAME_MAX:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:10]
    return raw[: JOB_NAME_MAX - 11].decode(errors="ignore") + "~" + digest


async def current_state(conn: psycopg.AsyncConnection[Any]) -> SchedulerState | None:
    cur = await conn.execute(q("scheduler_state"))
    row = await cur.fetchone()
    if row is None:
        return None
    return SchedulerState(backend=row[0], detail=row[1], chosen_by=row[2], updated_at=row[3])


async def _cron_connect(url: str, pg_cron: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        with_dbname(url, pg_cron), autocommit=True, options=CONNECTION_OPTIONS, connect_timeout=5
    )


def pg_cron_grants(role: str, cron_database: str | None) -> str:
    """What a role that is not a superuser needs for the pg_cron backend, as SQL a
    superuser runs (docs/deployment.md)."""
    where = f"database {cron_database!r}" if cron_database else "pg_cron's database"
    if not re.fullmatch(r"[a-z_][a-z0-9_$]*", role):
        role = '"' + role.replace('"', '""') + '"'
    return (
        f"as a superuser, GRANT pg_read_all_settings TO {role}; and in {where}: "
        f"GRANT USAGE ON SCHEMA cron TO {role}; GRANT EXECUTE ON FUNCTION "
        f"cron.schedule_in_database(text, text, text, text, text, boolean) TO {role} "
        "(docs/deployment.md)"
    )


async def detect_pg_cron(conn: psycopg.AsyncConnection[Any], url: str) -> tuple[PgCron | None, str]:
    """pg_cron if this database can use it, and in any case a sentence saying why."""
    role = conn.info.user
    try:
        # A savepoint: the refusal must not abort the caller's transaction.
        async with conn.transaction():
            cur = await conn.execute(q("pg_cron_setting"))
            row = await cur.fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None, (
            f"pg_cron is preloaded and role {role!r} may not read cron.database_name; "
            f"to use pg_cron: {pg_cron_grants(role, None)}"
        )
    assert row is not None
    cron_database, this_database = row
    if not cron_database:
        return None, "pg_cron is not preloaded (shared_preload_libraries)"
    try:
        async with await _cron_connect(url, cron_database) as cron:
            cur = await cron.execute(q("pg_cron_extension"))
            found = await cur.fetchone()
            if found is None:
                return None, (
                    f"pg_cron is preloaded but not created in its database {cron_database!r} "
                    "(CREATE EXTENSION pg_cron there)"
                )
            version, in_database, usage, execute = found
            if not in_database:
                return None, f"pg_cron {version} lacks cron.schedule_in_database() (needs 1.4+)"
            if not (usage and execute):
                lacks = " and ".join(
                    what
                    for what, granted in (
                        ("USAGE on schema cron", usage),
                        ("EXECUTE on cron.schedule_in_database()", execute),
                    )
                    if not granted
                )
                return None, (
                    f"role {role!r} lacks {lacks} in pg_cron's database {cron_database!r}; "
                    f"to use pg_cron: {pg_cron_grants(role, cron_database)}"
                )
            # Proves that our role may read (and so manage) its own jobs there.
            await cron.execute(
                q("cron_jobs"), {"database": this_database, "prefix": JOB_PREFIX + "%"}
            )
    except psycopg.Error as exc:
        return None, f"pg_cron's database {cron_database!r} is out of reach: {exc}".strip()
    return PgCron(database=cron_database, version=version), (
        f"pg_cron {version}, jobs in database {cron_database!r}"
    )


def decide(
    wanted: Literal["auto", "pg_cron", "procrastinate"], pg_cron: PgCron | None, why: str
) -> tuple[SchedulerBackend, str]:
    if wanted == "procrastinate":
        return "procrastinate", "configured ([scheduler].backend = procrastinate)"
    if pg_cron is None:
        if wanted == "pg_cron":
            raise SchedulerUnavailable(f"[scheduler].backend is pg_cron, but {why}")
        return "procrastinate", f"auto: {why}"
    return "pg_cron", f"{'auto' if wanted == 'auto' else 'configured'}: {why}"


async def desired_jobs(
    conn: psycopg.AsyncConnection[Any], config: Config, database: str
) -> dict[str, CronJob]:
    """The pg_cron jobs this database needs now: one per enabled schedule, the digest flush
    and retention, with their commands rendered as literal SQL."""
    render = psycopg.AsyncClientCursor(conn).mogrify
    jobs = [
        CronJob(
            name=job_name(database, f"schedule:{s.name}"),
            schedule=EVERY_MINUTE,
            command=render(q("cron_fire_schedule"), {"name": s.name}),
        )
        for s in await list_schedules(conn)
        if s.settings.enabled
    ]
    jobs.append(
        CronJob(
            name=job_name(database, "digests"),
            schedule=EVERY_MINUTE,
            command=q("cron_flush_digests"),
        )
    )
    jobs.append(
        CronJob(
            name=job_name(database, "retention"),
            schedule=config.scheduler.retention_cron,
            command=render(q("call_prune_retention"), retention.params(config.retention)),
        )
    )
    return {job.name: job for job in jobs}


async def reconcile(
    cron: psycopg.AsyncConnection[Any], database: str, desired: dict[str, CronJob]
) -> tuple[list[str], list[str]]:
    """Make our pg_cron jobs for `database` exactly `desired`; (scheduled, unscheduled).
    Also removes our jobs whose database is gone, which would fail every minute."""
    cur = await cron.execute(q("cron_jobs"), {"database": database, "prefix": JOB_PREFIX + "%"})
    existing = {str(r[1]): r for r in await cur.fetchall()}
    scheduled, unscheduled = [], []
    for name, job in sorted(desired.items()):
        have = existing.get(name)
        if have is None or (have[2], have[3], have[4]) != (job.schedule, job.command, True):
            await cron.execute(
                q("cron_schedule"),
                {
                    "job": name,
                    "schedule": job.schedule,
                    "command": job.command,
                    "database": database,
                },
            )
            scheduled.append(name)
    for name, have in sorted(existing.items()):
        if name not in desired:
            await cron.execute(q("cron_unschedule"), {"jobid": have[0]})
            unscheduled.append(name)
    cur = await cron.execute(q("cron_unschedule_orphans"), {"prefix": JOB_PREFIX + "%"})
    unscheduled += [str(r[0]) for r in await cur.fetchall()]
    return scheduled, unscheduled


async def sync(url: str, config: Config, *, chosen_by: str) -> SyncReport:
    """Start-up's (and `bin/schedules sync`'s) work: the config's schedules into the table,
    the backend chosen and saved, and pg_cron's jobs made to match (or removed)."""
    check_event_types(config)
    wanted = config.scheduler.backend
    async with await psycopg.AsyncConnection.connect(url, options=CONNECTION_OPTIONS) as conn:
        async with conn.transaction():
            await conn.execute(q("scheduler_sync_lock"))
            changes = await sync_config_schedules(conn, config.schedules)
            previous = await current_state(conn)
            pg_cron: PgCron | None = None
            why = ""
            # "procrastinate" leaves pg_cron alone (its settings may be closed to our role),
            # except to remove the jobs it ran for us until now.
            if wanted != "procrastinate" or (previous and previous.backend == "pg_cron"):
                pg_cron, why = await detect_pg_cron(conn, url)
            backend, detail = decide(wanted, pg_cron, why)
            scheduled: list[str] = []
            unscheduled: list[str] = []
            if pg_cron is not None:
                database = conn.info.dbname
                desired = await desired_jobs(conn, config, database) if backend == "pg_cron" else {}
                try:
                    scheduled, unscheduled = await _reconcile_in(url, pg_cron, database, desired)
                except psycopg.Error as exc:
                    refused = f"pg_cron refused our jobs: {exc}".strip()
                    if wanted == "pg_cron":
                        raise SchedulerUnavailable(
                            f"{refused}; {pg_cron_grants(conn.info.user, pg_cron.database)}"
                        ) from exc
                    if backend == "pg_cron":
                        backend, detail = "procrastinate", f"auto: {refused}"
                    try:
                        scheduled, unscheduled = await _reconcile_in(url, pg_cron, database, {})
                    except psycopg.Error:
                        # The schedule and digest jobs idle while scheduler_state names the
                        # other backend; retention prunes twice at worst.
                        detail += f" (remove our jobs in pg_cron's database {pg_cron.database!r})"
                        log.warning("scheduler: %s, and its jobs could not be removed", refused)
            elif previous and previous.backend == "pg_cron" and backend != "pg_cron":
                detail += f"; pg_cron's jobs from before could not be removed: {why}"
            await conn.execute(
                q("save_scheduler_state"),
                {"backend": backend, "detail": detail, "chosen_by": chosen_by},
            )
    for name, change in changes:
        log.info("schedule %s: %s (config file)", name, change)
    log.info(
        "scheduler: %s (%s)%s",
        backend,
        detail,
        f"; pg_cron jobs scheduled {len(scheduled)}, removed {len(unscheduled)}"
        if scheduled or unscheduled
        else "",
    )
    return SyncReport(
        backend=backend,
        detail=detail,
        changes=changes,
        scheduled=scheduled,
        unscheduled=unscheduled,
    )


async def _reconcile_in(
    url: str, pg_cron: PgCron, database: str, desired: dict[str, CronJob]
) -> tuple[list[str], list[str]]:
    async with await _cron_connect(url, pg_cron.database) as cron:
        return await reconcile(cron, database, desired)


async def refresh_jobs(url: str, config: Config) -> tuple[list[str], list[str]]:
    """After bin/schedules changed a schedule: pg_cron's jobs follow, if it is the active
    backend (the Procrastinate ticks read the table as it is). (scheduled, unscheduled)."""
    async with await psycopg.AsyncConnection.connect(url, options=CONNECTION_OPTIONS) as conn:
        async with conn.transaction():
            await conn.execute(q("scheduler_sync_lock"))
            state = await current_state(conn)
            if state is None or state.backend != "pg_cron":
                return [], []
            pg_cron, why = await detect_pg_cron(conn, url)
            if pg_cron is None:
                raise SchedulerUnavailable(f"pg_cron is the active backend, but {why}")
            database = conn.info.dbname
            desired = await desired_jobs(conn, config, database)
            async with await _cron_connect(url, pg_cron.database) as cron:
                return await reconcile(cron, database, desired)


async def cron_job_runs(conn: psycopg.AsyncConnection[Any], url: str) -> list[CronJobRun] | None:
    """Our pg_cron jobs with their last runs; None unless pg_cron is the active backend and
    can be used."""
    state = await current_state(conn)
    if state is None or state.backend != "pg_cron":
        return None
    pg_cron, _ = await detect_pg_cron(conn, url)
    if pg_cron is None:
        return None
    async with await _cron_connect(url, pg_cron.database) as cron:
        cur = await cron.execute(
            q("cron_last_runs"), {"database": conn.info.dbname, "prefix": JOB_PREFIX + "%"}
        )
        return [
            CronJobRun(
                name=r[0],
                schedule=r[1],
                active=r[2],
                status=r[3],
                message=r[4],
                started_at=r[5],
                runs=int(r[7]),
            )
            for r in await cur.fetchall()
        ]
