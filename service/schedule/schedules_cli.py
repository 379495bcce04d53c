"""`bin/schedules`: periodic schedules from the command line (docs/scheduler.md).

    bin/schedules list
    bin/schedules add digest-eu --cron '0 8 * * 1-5' --timezone Europe/Paris \\
        --event-type new_episode --topic series-123 --url https://example.com/latest.json
    bin/schedules set digest-eu --cron '0 9 * * 1-5'
    bin/schedules disable digest-eu | enable digest-eu | remove digest-eu
    bin/schedules run weekly-newsletter     # now, here; prints what it did
    bin/schedules sync                      # the config's schedules and the backend, now
    bin/schedules status                    # the backend, pg_cron's jobs, the last runs

Schedules declared in the config file ([schedules.<name>]) follow the file: start-ups and
`sync` make their rows what it says, and this command refuses to change them. Schedules
made here are left alone by start-ups. Under pg_cron, each change here updates its jobs.
Every change (add, set, enable, disable, remove, run, sync) writes an audit_log row with
the actor cli:<os user>, as the admin panel's schedule actions do.

The config and the database are bin/dev's: --config, else MARK_NOTIFY_CONFIG (else
config/mark-notify.toml, else config/example.toml); --database-url, else DATABASE_URL, else
the config's, else the embedded one.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg

from service import audit
from service.config.schedule import Audience, HttpSource, Source, SqlSource
from service.errors import unknown_name
from service.ops import cli
from service.schedule import backend
from service.schedule.runner import run_schedule
from service.schedule_store import (
    Schedule,
    ScheduleError,
    add_schedule,
    check_event_type,
    edited_settings,
    get_schedule,
    list_schedules,
    redacted,
    remove_schedule,
    run_record,
    update_schedule,
)
from service.sql import q


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _audience(audience: Audience) -> str:
    if audience.topic is not None:
        return f"topic:{audience.topic}"
    if audience.all:
        return "all"
    return f"users:{len(audience.user_ids or [])}"


def _source_kind(source: Source) -> str:
    if isinstance(source, HttpSource):
        return f"http {source.url}"
    if isinstance(source, SqlSource):
        return f"sql ({source.shape})"
    return "static"


def _parser() -> argparse.ArgumentParser:
    parser = cli.command_parser(
        "bin/schedules",
        "Periodic schedules: each posts an event at the times its cron names.",
        cli.epilog(__doc__, 1),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every schedule")
    for command, required in (("add", True), ("set", False)):
        edit = commands.add_parser(
            command,
            help="a new schedule" if required else "change a schedule (the options given)",
        )
        edit.add_argument("name")
        edit.add_argument("--cron", required=required, help="minute hour day month weekday")
        edit.add_argument("--timezone", help="IANA zone the cron is read in (default UTC)")
        edit.add_argument("--event-type", required=required)
        edit.add_argument("--description")
        who = edit.add_mutually_exclusive_group(required=required)
        who.add_argument("--topic", help="the topic's members")
        who.add_argument("--all", action="store_true", help="every user")
        who.add_argument("--user-id", action="append", help="these users (repeat)")
        source = edit.add_mutually_exclusive_group()
        source.add_argument("--data", help="static event data, a JSON object")
        source.add_argument("--sql", help="a read-only query giving the data at each run")
        source.add_argument("--url", help="a URL whose JSON object is the data at each run")
        edit.add_argument("--shape", choices=["rows", "row"], help="with --sql (default rows)")
        edit.add_argument("--header", action="append", help="with --url: 'Name: value'")
        if required:
            edit.add_argument("--disabled", action="store_true", help="made, but not run")
    for command, text in (
        ("enable", "run it again at its times"),
        ("disable", "stop running it (kept)"),
        ("remove", "delete it (its runs are kept)"),
        ("run", "run it now, here, and say what it did"),
    ):
        commands.add_parser(command, help=text).add_argument("name")
    commands.add_parser("sync", help="the config's schedules and the backend, now")
    commands.add_parser("status", help="the backend, pg_cron's jobs and the last runs")
    return parser


async def _existing(conn: psycopg.AsyncConnection[Any], name: str) -> Schedule:
    schedule = await get_schedule(conn, name)
    if schedule is None:
        names = [s.name for s in await list_schedules(conn)]
        raise ScheduleError(unknown_name("schedule", name, names))
    return schedule


def _print_schedules(schedules: Sequence[Schedule]) -> None:
    rows: list[tuple[str, ...]] = [
        ("NAME", "ORIGIN", "ON", "CRON", "TIME ZONE", "EVENT TYPE", "AUDIENCE", "SOURCE"),
    ]
    rows[0] += ("NEXT RUN", "LAST RUN", "OUTCOME")
    for s in schedules:
        rows.append(
            (
                s.name,
                s.origin,
                "yes" if s.settings.enabled else "no",
                s.settings.cron,
                s.settings.timezone,
                s.settings.event_type,
                _audience(s.settings.audience),
                _source_kind(s.settings.source),
                _when(s.next_run_at),
                _when(s.last_run_at),
                s.last_outcome or "-",
            )
        )
    _table(rows)


async def _status(conn: psycopg.AsyncConnection[Any], url: str) -> None:
    state = await backend.current_state(conn)
    if state is None:
        print("backend: none chosen yet (start a dispatcher, or run bin/schedules sync)")
    else:
        print(
            f"backend: {state.backend} ({state.detail}); chosen by {state.chosen_by} "
            f"at {_when(state.updated_at)}"
        )
    jobs = await backend.cron_job_runs(conn, url)
    if jobs is not None:
        print("\npg_cron jobs (cron.job, cron.job_run_details):")
        rows: list[tuple[str, ...]] = [
            ("JOB", "SCHEDULE", "ACTIVE", "RUNS", "LAST RUN", "STATUS", "MESSAGE")
        ]
        rows += [
            (
                j.name,
                j.schedule,
                "yes" if j.active else "no",
                str(j.runs),
                _when(j.started_at),
                j.status or "-",
                (j.message or "-")[:60],
            )
            for j in jobs
        ]
        _table(rows)
    schedules = await list_schedules(conn)
    print("\nschedules:")
    if schedules:
        _print_schedules(schedules)
    cur = await conn.execute(q("recent_schedule_runs"), {"limit": 10})
    runs = await cur.fetchall()
    if runs:
        print("\nlast runs:")
        rows = [("SCHEDULE", "FOR", "FIRED BY", "OUTCOME", "ATTEMPTS", "ERROR")]
        rows += [(r[0], _when(r[1]), r[2], r[3], str(r[4]), (r[5] or "-")[:80]) for r in runs]
        _table(rows)


async def run(command: cli.Command) -> int:
    args = command.args
    config = command.config()
    url = command.database(config).url

    @asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with command.connect(url) as conn:
            yield conn

    actor = command.actor
    changed = False
    async with connect() as conn:
        if args.command == "list":
            _print_schedules(await list_schedules(conn))
        elif args.command == "status":
            await _status(conn, url)
        elif args.command == "sync":
            report = await backend.sync(url, config, chosen_by="bin/schedules sync")
            # The sync commits as it goes (its own connections): its row follows it.
            await audit.record(conn, actor, "schedule.sync", None, after=report)
            for name, change in report.changes:
                print(f"{name}: {change}")
            print(f"backend: {report.backend} ({report.detail})")
            for job in report.scheduled:
                print(f"pg_cron: scheduled {job}")
            for job in report.unscheduled:
                print(f"pg_cron: unscheduled {job}")
        elif args.command == "run":
            await _existing(conn, args.name)
            now = datetime.now(UTC).replace(microsecond=0)
            result = await run_schedule(connect, config, args.name, now, "manual")
            # As the admin's Run now: the run commits its own work, and its row follows it.
            await audit.record(conn, actor, "schedule.run", args.name, after=run_record(result))
            print(
                f"{result.schedule}: {result.outcome}"
                + (f" event {result.event_id}" if result.event_id else "")
                + f" (for {_when(result.scheduled_for)}, {result.attempts} attempt(s))"
                + (f": {result.error}" if result.error else "")
            )
            return cli.FAILED if result.outcome == "failed" else cli.OK
        elif args.command == "add":
            settings = edited_settings(args, None)
            async with conn.transaction():
                await check_event_type(conn, settings.event_type)
                added = await add_schedule(conn, args.name, settings)
                after = redacted(added.settings)
                await audit.record(conn, actor, "schedule.create", args.name, after=after)
            print(f"added {added.name}; next run {_when(added.next_run_at)}")
            changed = True
        else:
            await _change(conn, args, actor)
            changed = True
    if changed:
        scheduled, unscheduled = await backend.refresh_jobs(url, config)
        for job in scheduled:
            print(f"pg_cron: scheduled {job}")
        for job in unscheduled:
            print(f"pg_cron: unscheduled {job}")
    return cli.OK


async def _change(conn: psycopg.AsyncConnection[Any], args: argparse.Namespace, actor: str) -> None:
    """set, enable, disable or remove: the change and its audit row in one transaction."""
    async with conn.transaction():
        current = await _existing(conn, args.name)
        if args.command == "remove":
            await remove_schedule(conn, args.name)
            before = redacted(current.settings)
            await audit.record(conn, actor, "schedule.remove", args.name, before=before)
            print(f"removed {args.name}")
            return
        if args.command == "set":
            settings = edited_settings(args, current.settings)
            await check_event_type(conn, settings.event_type)
        else:
            enabled = args.command == "enable"
            settings = msgspec.structs.replace(current.settings, enabled=enabled)
        done = await update_schedule(conn, args.name, settings)
        if args.command == "set":
            before, after = redacted(current.settings), redacted(done.settings)
        else:
            # As the admin panel's switches record them.
            before = {"enabled": current.settings.enabled, "next_run_at": current.next_run_at}
            after = {"enabled": done.settings.enabled, "next_run_at": done.next_run_at}
        action = "schedule.update" if args.command == "set" else f"schedule.{args.command}"
        await audit.record(conn, actor, action, args.name, before=before, after=after)
    state = "enabled" if done.settings.enabled else "disabled"
    print(f"{args.command}: {done.name} ({state}); next run {_when(done.next_run_at)}")


def main(argv: list[str] | None = None) -> int:
    return cli.main(_parser(), run, argv, failed=(ScheduleError, backend.SchedulerUnavailable))


if __name__ == "__main__":
    cli.exit_with(main)
