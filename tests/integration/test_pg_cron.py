"""The pg_cron backend, on a server that has it (CI's PostgreSQL 15; a skip elsewhere, but a
failure under CI=true): one job per schedule, the digest flush and retention, kept in step
with the schedules, removed when another backend is chosen or their database is gone, and a
real pg_cron tick firing a schedule end to end (behind --pg-cron-tick)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.database import with_dbname
from service.schedule import backend
from service.schedule_store import fire_due, get_schedule
from service.sql import q
from tests.consumers import running, scalar, wait_until
from tests.notify_api import running_api
from tests.schedules import (
    Conn,
    add_users,
    api_config,
    bin_schedules,
    make,
    make_due,
    newsletter,
    schedule_data,
    sync_types,
    write_config,
)
from tests.support import scratch_database

pytestmark = pytest.mark.timeout(180)


async def our_jobs(cron_url: str, database: str) -> dict[str, tuple[Any, ...]]:
    """This database's pg_cron jobs: name -> (schedule, command, active)."""
    async with await psycopg.AsyncConnection.connect(cron_url, autocommit=True) as cron:
        cur = await cron.execute(
            q("cron_jobs"), {"database": database, "prefix": backend.JOB_PREFIX + "%"}
        )
        return {r[1]: (r[2], r[3], r[4]) for r in await cur.fetchall()}


async def drop_jobs(cron_url: str, database: str) -> None:
    async with await psycopg.AsyncConnection.connect(cron_url, autocommit=True) as cron:
        await backend.reconcile(cron, database, {})


@pytest.fixture
async def cron_url(db_url: str, db: Conn) -> AsyncIterator[str]:
    """pg_cron's database; this test database's jobs are removed afterwards, before the
    database is dropped (a job whose database is gone would fail every minute)."""
    found, why = await backend.detect_pg_cron(db, db_url)
    if found is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI runs the pg_cron tests, but {why}")
        pytest.skip(why)
    url = with_dbname(db_url, found.database)
    try:
        yield url
    finally:
        await drop_jobs(url, db.info.dbname)


async def test_auto_chooses_pg_cron_and_keeps_one_job_per_schedule(
    db_url: str, db: Conn, cron_url: str, tmp_path: Path
) -> None:
    database = db.info.dbname
    data = schedule_data(db_url, backend="auto")
    data["schedules"] = {
        "weekly-newsletter": newsletter(),
        "paused": newsletter(enabled=False),
    }
    config = make(data)
    await sync_types(db, config)
    report = await backend.sync(db_url, config, chosen_by="test")
    assert report.backend == "pg_cron"
    assert report.detail.startswith("auto: pg_cron 1.")

    prefix = f"mark-notify:{database}:"
    jobs = await our_jobs(cron_url, database)
    retention = jobs.pop(prefix + "retention")
    assert jobs == {
        prefix + "schedule:weekly-newsletter": (
            "* * * * *",
            "SELECT fire_due_schedules('pg_cron', 'weekly-newsletter')",
            True,
        ),
        prefix + "digests": (
            "* * * * *",
            "SELECT flush_digests() WHERE scheduler_active('pg_cron')",
            True,
        ),
    }
    assert retention[0] == "17 3 * * *"
    assert retention[1].startswith("CALL prune_retention(delivered => '7 days")
    assert sorted(report.scheduled) == sorted([*jobs, prefix + "retention"])
    # A second sync changes nothing.
    assert (await backend.sync(db_url, config, chosen_by="test")).scheduled == []

    async with running_api(db_url, **api_config(data)) as api:
        ready = (await api.get("/readyz")).json()
    assert ready["scheduler"] == {"backend": "pg_cron", "detail": report.detail}

    # What pg_cron runs each minute, run here by hand in our database: the schedule's job
    # defers its run once it is due (and only then), the Procrastinate tick stays idle.
    fire = jobs[prefix + "schedule:weekly-newsletter"][1]
    assert await scalar(db, fire) == 0
    at = await make_due(db, "weekly-newsletter")
    assert await fire_due(db, "procrastinate") == 0
    assert await scalar(db, fire) == 1
    assert await scalar(db, fire) == 0
    cur = await db.execute("SELECT args FROM procrastinate_jobs WHERE task_name = 'schedule.run'")
    ((args,),) = await cur.fetchall()
    assert (args["fired_by"], datetime.fromisoformat(args["scheduled_for"])) == ("pg_cron", at)
    for command in (jobs[prefix + "digests"][1], retention[1]):
        await db.execute(command)

    # bin/schedules keeps the jobs in step with its changes.
    file = write_config(tmp_path / "config.toml", data)
    add = bin_schedules(
        db_url, file, "add", "extra", "--cron", "0 12 * * *", "--event-type",
        "weekly_newsletter", "--all", "--data", '{"title": "t", "intro": "i", "url": "u"}',
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert f"pg_cron: scheduled {prefix}schedule:extra" in add.stdout
    assert prefix + "schedule:extra" in await our_jobs(cron_url, database)
    disable = bin_schedules(db_url, file, "disable", "extra")
    assert f"pg_cron: unscheduled {prefix}schedule:extra" in disable.stdout
    assert prefix + "schedule:extra" not in await our_jobs(cron_url, database)
    assert bin_schedules(db_url, file, "enable", "extra").returncode == 0
    assert prefix + "schedule:extra" in await our_jobs(cron_url, database)
    assert bin_schedules(db_url, file, "remove", "extra").returncode == 0
    assert prefix + "schedule:extra" not in await our_jobs(cron_url, database)

    status = bin_schedules(db_url, file, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"backend: pg_cron ({report.detail}); chosen by test at ")
    (line,) = [
        line
        for line in status.stdout.splitlines()
        if line.startswith(prefix + "schedule:weekly-newsletter ")
    ]
    assert line.split()[1:7] == ["*", "*", "*", "*", "*", "yes"]

    # Another backend chosen: pg_cron's jobs go, so exactly one backend runs.
    data["scheduler"]["backend"] = "procrastinate"
    switched = await backend.sync(db_url, make(data), chosen_by="test")
    assert switched.backend == "procrastinate"
    assert sorted(switched.unscheduled) == sorted([*jobs, prefix + "retention"])
    assert await our_jobs(cron_url, database) == {}


async def test_jobs_of_a_dropped_database_are_removed_by_the_next_sync(
    db_url: str, db: Conn, cron_url: str, pg_server_url: str, template_db: str
) -> None:
    data = schedule_data(db_url, backend="pg_cron")
    with scratch_database(pg_server_url, template_db) as other_url:
        async with await psycopg.AsyncConnection.connect(other_url, autocommit=True) as other:
            other_db = other.info.dbname
            await sync_types(other, make(schedule_data(other_url)))
        await backend.sync(
            other_url, make(schedule_data(other_url, backend="pg_cron")), chosen_by="t"
        )
        assert len(await our_jobs(cron_url, other_db)) == 2
    report = await backend.sync(db_url, make(data), chosen_by="test")
    gone = {f"mark-notify:{other_db}:digests", f"mark-notify:{other_db}:retention"}
    assert gone <= set(report.unscheduled)
    assert await our_jobs(cron_url, other_db) == {}


def test_long_names_are_cut_to_fit_pg_cron_and_stay_distinct() -> None:
    a = backend.job_name("mn_" + "x" * 60, "schedule:" + "a" * 64)
    b = backend.job_name("mn_" + "x" * 60, "schedule:" + "a" * 63 + "b")
    assert len(a.encode()) <= 63 and len(b.encode()) <= 63 and a != b
    assert a.startswith("mark-notify:mn_xxx")
    assert backend.job_name("db", "digests") == "mark-notify:db:digests"


@pytest.mark.pg_cron_tick
async def test_a_pg_cron_tick_fires_a_schedule_end_to_end(
    db_url: str, db: Conn, cron_url: str
) -> None:
    data = schedule_data(db_url, backend="auto")
    data["schedules"] = {"weekly-newsletter": newsletter()}
    config = make(data)
    await add_users(db, ["u1", "u2"])
    database = db.info.dbname
    async with running(config, db_url):
        state = await backend.current_state(db)
        assert state is not None and state.backend == "pg_cron"
        at = await make_due(db, "weekly-newsletter")

        async def sent() -> bool:
            cur = await db.execute(
                "SELECT fired_by, outcome FROM schedule_runs WHERE schedule = 'weekly-newsletter'"
            )
            return await cur.fetchall() == [("pg_cron", "sent")]

        # pg_cron 1.4 ticks on the minute: the next one fires it.
        await wait_until(sent, 75, "pg_cron's next tick to fire the schedule", step=0.5)
    key = await scalar(db, "SELECT idempotency_key FROM events")
    assert key == f"schedule:weekly-newsletter:{at.astimezone(UTC).isoformat()}"
    assert await scalar(db, "SELECT count(*) FROM notifications") == 2
    schedule = await get_schedule(db, "weekly-newsletter")
    assert schedule is not None and schedule.next_run_at is not None
    assert schedule.next_run_at > datetime.now(UTC)
    # The tick is in pg_cron's own record of its runs.
    async with await psycopg.AsyncConnection.connect(cron_url, autocommit=True) as cron:
        cur = await cron.execute(
            "SELECT r.status FROM cron.job_run_details AS r JOIN cron.job AS j USING (jobid)"
            " WHERE j.jobname = %s",
            [f"mark-notify:{database}:schedule:weekly-newsletter"],
        )
        statuses = [r[0] for r in await cur.fetchall()]
    assert "succeeded" in statuses
