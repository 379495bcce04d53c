"""Periodic events: bin/schedules, config schedules following the file, each kind of data
source, runs that fire once per tick however many workers, and the Procrastinate backend
firing in a running dispatcher."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config.schedule import SqlSource
from service.schedule import backend
from service.schedule.runner import run_schedule
from service.schedule.sources import SourceError, fetch
from service.schedule_store import (
    PRODUCER,
    ScheduleError,
    add_schedule,
    fire_due,
    get_schedule,
    list_schedules,
    next_run,
)
from tests.consumers import running, scalar, wait_until
from tests.notify_api import running_api
from tests.schedules import (
    NEWSLETTER,
    Conn,
    add_users,
    api_config,
    bin_schedules,
    connector,
    make,
    make_due,
    newsletter,
    schedule_data,
    sync_types,
    write_config,
)
from tests.support import serve

# On the Citus cluster too (`pytest --citus`): the schedules run there unchanged.
pytestmark = [pytest.mark.timeout(120), pytest.mark.citus]

NIGHTLY = {"title": "T", "intro": "I", "url": "https://x"}


async def events_of(db: Conn) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT producer, idempotency_key, type, recipients, data FROM events ORDER BY created_at"
    )
    return await cur.fetchall()


async def runs_of(db: Conn, name: str) -> list[tuple[Any, ...]]:
    cur = await db.execute(
        "SELECT scheduled_for, fired_by, outcome, attempts, error, event_id IS NOT NULL"
        " FROM schedule_runs WHERE schedule = %s ORDER BY started_at",
        [name],
    )
    return await cur.fetchall()


async def fired_jobs(db: Conn) -> list[dict[str, Any]]:
    cur = await db.execute(
        "SELECT args FROM procrastinate_jobs WHERE task_name = 'schedule.run' ORDER BY id"
    )
    return [row[0] for row in await cur.fetchall()]


# -- bin/schedules --------------------------------------------------------------------------


async def test_bin_schedules_adds_lists_changes_disables_and_removes(
    db_url: str, db: Conn, tmp_path: Path
) -> None:
    data = schedule_data(db_url)
    config = make(data)
    await sync_types(db, config)
    file = write_config(tmp_path / "config.toml", data)
    nightly_data = msgspec.json.encode(NIGHTLY).decode()

    added = bin_schedules(
        db_url, file, "add", "nightly", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin",
        "--event-type", "weekly_newsletter", "--topic", "newsletter", "--data", nightly_data,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    row = await get_schedule(db, "nightly")
    assert row is not None and row.origin == "cli" and row.settings.enabled
    # 02:30 in Berlin, in UTC: the next one after now.
    expected = next_run("30 2 * * *", "Europe/Berlin", datetime.now(UTC))
    assert row.next_run_at == expected
    assert expected.astimezone(UTC).hour in (0, 1)
    assert f"added nightly; next run {expected:%Y-%m-%d %H:%M:%S}Z" in added.stdout

    again = bin_schedules(
        db_url, file, "add", "nightly", "--cron", "0 1 * * *", "--event-type",
        "weekly_newsletter", "--all",
    )  # fmt: skip
    assert again.returncode == 1 and "a schedule named 'nightly' exists" in again.stderr
    bad_cron = bin_schedules(
        db_url, file, "add", "x", "--cron", "61 * * * *", "--event-type", "weekly_newsletter",
        "--all",
    )  # fmt: skip
    assert bad_cron.returncode == 1 and "'61 * * * *' is not a cron expression" in bad_cron.stderr
    bad_type = bin_schedules(
        db_url, file, "add", "x", "--cron", "0 1 * * *", "--event-type", "nope", "--all"
    )
    # The catalog's event types are named, so a typo is plain.
    assert bad_type.returncode == 1 and bad_type.stderr.startswith(
        f"schedules: no event type named 'nope' (valid: {', '.join(sorted(config.event_types))})"
    )
    assert await scalar(db, "SELECT count(*) FROM schedules") == 1

    listed = bin_schedules(db_url, file, "list")
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.strip().splitlines()
    assert header.split()[:4] == ["NAME", "ORIGIN", "ON", "CRON"]
    assert line.split()[:10] == [
        "nightly", "cli", "yes", "30", "2", "*", "*", "*", "Europe/Berlin", "weekly_newsletter",
    ]  # fmt: skip
    assert "topic:newsletter" in line and "static" in line

    changed = bin_schedules(db_url, file, "set", "nightly", "--cron", "0 7 * * *")
    assert changed.returncode == 0, changed.stderr
    row = await get_schedule(db, "nightly")
    assert row is not None and row.settings.cron == "0 7 * * *"
    assert row.next_run_at == next_run("0 7 * * *", "Europe/Berlin", datetime.now(UTC))
    # What `set` was not given stays as it was.
    assert row.settings.audience.topic == "newsletter"
    assert msgspec.to_builtins(row.settings.source) == {"kind": "static", "data": NIGHTLY}
    by_url = bin_schedules(
        db_url, file, "set", "nightly", "--url", "http://127.0.0.1:9/x.json", "--header",
        "Authorization: Bearer t",
    )  # fmt: skip
    assert by_url.returncode == 0, by_url.stderr
    row = await get_schedule(db, "nightly")
    assert row is not None
    assert msgspec.to_builtins(row.settings.source) == {
        "kind": "http",
        "url": "http://127.0.0.1:9/x.json",
        "headers": {"Authorization": "Bearer t"},
    }

    assert bin_schedules(db_url, file, "disable", "nightly").returncode == 0
    row = await get_schedule(db, "nightly")
    assert row is not None and not row.settings.enabled and row.next_run_at is None
    assert bin_schedules(db_url, file, "list").stdout.splitlines()[1].split()[2] == "no"
    assert bin_schedules(db_url, file, "enable", "nightly").returncode == 0
    row = await get_schedule(db, "nightly")
    assert row is not None and row.settings.enabled and row.next_run_at is not None

    assert bin_schedules(db_url, file, "remove", "nightly").returncode == 0
    assert await get_schedule(db, "nightly") is None
    gone = bin_schedules(db_url, file, "remove", "nightly")
    assert gone.returncode == 1 and "no schedule named 'nightly' (there are none)" in gone.stderr


async def test_bin_schedules_sync_run_and_status(db_url: str, db: Conn, tmp_path: Path) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly-newsletter": newsletter(audience={"topic": "newsletter"})}
    config = make(data)
    await sync_types(db, config)
    await add_users(db, ["u1", "u2"], topic="newsletter")
    file = write_config(tmp_path / "config.toml", data)

    synced = bin_schedules(db_url, file, "sync")
    assert synced.returncode == 0, synced.stderr
    assert "weekly-newsletter: added" in synced.stdout
    assert "backend: procrastinate (configured ([scheduler].backend = procrastinate))" in (
        synced.stdout
    )
    row = await get_schedule(db, "weekly-newsletter")
    assert row is not None and row.origin == "config"

    # The file's schedules are the file's: the command refuses to change them.
    refused = bin_schedules(db_url, file, "set", "weekly-newsletter", "--cron", "0 8 * * 1")
    assert refused.returncode == 1
    assert "declared in the config file ([schedules.weekly-newsletter])" in refused.stderr
    for command in ("disable", "remove"):
        assert bin_schedules(db_url, file, command, "weekly-newsletter").returncode == 1
    row = await get_schedule(db, "weekly-newsletter")
    assert row is not None and row.settings.cron == "0 9 * * 1" and row.settings.enabled

    ran = bin_schedules(db_url, file, "run", "weekly-newsletter")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("weekly-newsletter: sent event ")
    ((producer, key, event_type, recipients, event_data),) = await events_of(db)
    assert (producer, event_type, recipients) == (
        PRODUCER,
        "weekly_newsletter",
        {"topic": "newsletter"},
    )
    assert key.startswith("schedule:weekly-newsletter:") and key.endswith("+00:00")
    assert event_data == NEWSLETTER | {"scheduled_for": key.split(":", 2)[2]}
    # A manual run does not move the schedule's own next time.
    after = await get_schedule(db, "weekly-newsletter")
    assert after is not None and after.next_run_at == row.next_run_at
    assert after.last_outcome == "sent"

    status = bin_schedules(db_url, file, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(
        "backend: procrastinate (configured ([scheduler].backend = procrastinate)); "
        "chosen by bin/schedules sync at "
    )
    last_runs = status.stdout.split("last runs:")[1].strip().splitlines()
    assert last_runs[1].split()[0] == "weekly-newsletter"
    assert last_runs[1].split()[3:6] == ["manual", "sent", "1"]


# -- config schedules follow the file --------------------------------------------------------


async def test_config_schedules_follow_the_file_and_cli_schedules_are_left_alone(
    db_url: str, db: Conn
) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"a": newsletter(), "b": newsletter(cron="0 10 * * *")}
    config = make(data)
    await sync_types(db, config)
    report = await backend.sync(db_url, config, chosen_by="test")
    assert report.changes == [("a", "added"), ("b", "added")]
    assert (await backend.sync(db_url, config, chosen_by="test")).changes == []
    await add_schedule(db, "mine", make(data).schedules["a"])
    await add_schedule(db, "c", make(data).schedules["a"])
    # A run missed while nothing ran: a's time is in the past.
    missed = await make_due(db, "a")

    data["schedules"] = {
        # Only its description changes: it keeps its (missed) time, so the run is made.
        "a": newsletter(description="now with a description"),
        "c": newsletter(cron="0 6 * * *"),
    }
    report = await backend.sync(db_url, make(data), chosen_by="test")
    assert report.changes == [("a", "changed"), ("b", "removed"), ("c", "taken over")]
    rows = {s.name: s for s in await list_schedules(db)}
    assert set(rows) == {"a", "c", "mine"}
    assert rows["a"].next_run_at == missed and rows["a"].settings.description
    assert (rows["c"].origin, rows["c"].settings.cron) == ("config", "0 6 * * *")
    assert rows["c"].next_run_at == next_run("0 6 * * *", "Europe/Berlin", datetime.now(UTC))
    assert rows["mine"].origin == "cli"

    data["schedules"]["a"] = newsletter(cron="0 9 * * 2")
    await backend.sync(db_url, make(data), chosen_by="test")
    a = await get_schedule(db, "a")
    assert a is not None and a.next_run_at is not None and a.next_run_at > datetime.now(UTC)
    assert a.next_run_at.astimezone(UTC).weekday() == 1


async def test_a_config_schedule_of_an_unknown_event_type_fails_the_sync(db_url: str) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"a": newsletter(event_type="weekly_newsleter")}
    with pytest.raises(ScheduleError, match="no event type named 'weekly_newsleter'"):
        await backend.sync(db_url, make(data), chosen_by="test")


# -- runs and their sources ------------------------------------------------------------------


async def test_a_static_run_sends_once_however_often_it_is_made(db_url: str, db: Conn) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly-newsletter": newsletter()}
    config = make(data)
    await sync_types(db, config)
    await add_users(db, ["u1", "u2", "u3"])
    await backend.sync(db_url, config, chosen_by="test")
    at = await make_due(db, "weekly-newsletter")
    assert await fire_due(db, "procrastinate") == 1
    connect = connector(db_url)

    first = await run_schedule(connect, config, "weekly-newsletter", at, "procrastinate")
    assert (first.outcome, first.attempts, first.error) == ("sent", 1, None)
    cur = await db.execute("SELECT user_id FROM notifications ORDER BY user_id")
    assert [r[0] for r in await cur.fetchall()] == ["u1", "u2"]
    schedule = await get_schedule(db, "weekly-newsletter")
    assert schedule is not None and schedule.next_run_at is not None
    assert schedule.next_run_at > datetime.now(UTC) and schedule.last_outcome == "sent"

    again = await run_schedule(connect, config, "weekly-newsletter", at, "procrastinate")
    assert (again.outcome, again.error) == ("skipped", "made already")
    # Even a run made again from scratch (say its first record was lost) sends nothing
    # twice: the event's idempotency key is the schedule's and the time's.
    await db.execute("UPDATE schedule_runs SET outcome = 'failed'")
    redo = await run_schedule(connect, config, "weekly-newsletter", at, "procrastinate")
    assert (redo.outcome, redo.event_id) == ("duplicate", first.event_id)
    assert len(await events_of(db)) == 1
    assert await scalar(db, "SELECT count(*) FROM notifications") == 2


async def test_concurrent_ticks_fire_once_and_concurrent_runs_send_once(
    db_url: str, db: Conn
) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly-newsletter": newsletter()}
    config = make(data)
    await sync_types(db, config)
    await add_users(db, ["u1", "u2"])
    await backend.sync(db_url, config, chosen_by="test")
    at = await make_due(db, "weekly-newsletter")

    # Two dispatchers' ticks at once: the first holds the schedule's row (uncommitted) while
    # the second looks; the second skips it, and a later tick finds it fired.
    async with (
        await psycopg.AsyncConnection.connect(db_url) as one,
        await psycopg.AsyncConnection.connect(db_url) as two,
    ):
        assert await fire_due(one, "procrastinate") == 1
        assert await fire_due(two, "procrastinate") == 0
        await one.commit()
        await two.commit()
    assert await fire_due(db, "procrastinate") == 0
    # Only the active backend fires: pg_cron's job is a no-op here.
    await make_due(db, "weekly-newsletter")
    await db.execute("UPDATE schedules SET fired_for = NULL")
    assert await fire_due(db, "pg_cron") == 0
    await db.execute("UPDATE schedules SET next_run_at = %s, fired_for = %s", [at, at])
    (job,) = await fired_jobs(db)
    assert (job["name"], job["fired_by"]) == ("weekly-newsletter", "procrastinate")
    assert datetime.fromisoformat(job["scheduled_for"]) == at

    # Two workers making that run at once: one sends, the other leaves it be.
    connect = connector(db_url)
    results = await asyncio.gather(
        run_schedule(connect, config, "weekly-newsletter", at, "procrastinate"),
        run_schedule(connect, config, "weekly-newsletter", at, "procrastinate"),
    )
    assert sorted(r.outcome for r in results) == ["sent", "skipped"]
    assert len(await events_of(db)) == 1
    assert [r[2] for r in await runs_of(db, "weekly-newsletter")] == ["sent"]


class FlakyFeed:
    """A data source on loopback answering `failures` 503s, then the newsletter's data."""

    def __init__(self, failures: int, status: int = 503) -> None:
        self.failures = failures
        self.status = status
        self.requests: list[float] = []
        self.app = Starlette(routes=[Route("/feed.json", self.feed)])

    async def feed(self, request: Request) -> Response:
        self.requests.append(time.monotonic())
        if len(self.requests) <= self.failures:
            return Response(b"down for maintenance", self.status)
        return JSONResponse(NEWSLETTER | {"title": f"From the feed, try {len(self.requests)}"})


async def test_a_url_that_is_down_is_retried_with_backoff_then_reported(
    db_url: str, db: Conn
) -> None:
    data = schedule_data(db_url)
    config = make(data)
    await sync_types(db, config)
    await add_users(db, ["u1", "u2"])
    connect = connector(db_url)
    flaky, down, gone = FlakyFeed(1), FlakyFeed(100), FlakyFeed(100, status=404)
    async with (
        serve(flaky.app) as flaky_url,
        serve(down.app) as down_url,
        serve(gone.app) as gone_url,
    ):
        for name, url in (("flaky", flaky_url), ("down", down_url), ("gone", gone_url)):
            source = {"kind": "http", "url": f"{url}/feed.json"}
            data["schedules"] = {name: newsletter(source=source)}
            await add_schedule(db, name, make(data).schedules[name])
        await backend.sync(db_url, config, chosen_by="test")
        for name in ("flaky", "down", "gone"):
            await make_due(db, name)
        assert await fire_due(db, "procrastinate") == 3
        jobs = {job["name"]: job for job in await fired_jobs(db)}

        results = {}
        for name in ("flaky", "down", "gone"):
            at = datetime.fromisoformat(jobs[name]["scheduled_for"])
            results[name] = await run_schedule(connect, config, name, at, "procrastinate")

    # 503, then the data: sent on the second attempt, the first attempt's error kept.
    assert (results["flaky"].outcome, results["flaky"].attempts) == ("sent", 2)
    assert len(flaky.requests) == 2
    assert flaky.requests[1] - flaky.requests[0] >= 0.05
    (run,) = await runs_of(db, "flaky")
    assert run[2:4] == ("sent", 2) and "HTTP 503" in run[4]
    (event,) = await events_of(db)
    assert event[4]["title"] == "From the feed, try 2"

    # Down at every attempt: max_attempts tries, backing off, then failed and recorded; the
    # schedule goes on to its next time, and nothing was sent.
    assert (results["down"].outcome, results["down"].attempts) == ("failed", 3)
    assert len(down.requests) == 3
    (run,) = await runs_of(db, "down")
    assert run[1:4] == ("procrastinate", "failed", 3) and "HTTP 503" in run[4] and not run[5]
    schedule = await get_schedule(db, "down")
    assert schedule is not None and schedule.last_outcome == "failed"
    assert schedule.last_error is not None and "HTTP 503" in schedule.last_error
    assert schedule.next_run_at is not None and schedule.next_run_at > datetime.now(UTC)
    assert schedule.fired_for is None

    # A 404 will not get better by asking again: one attempt.
    assert (results["gone"].outcome, results["gone"].attempts) == ("failed", 1)
    assert len(gone.requests) == 1
    assert len(await events_of(db)) == 1


async def test_a_sql_source_reads_rows_and_can_neither_write_nor_run_long(
    db_url: str, db: Conn
) -> None:
    data = schedule_data(db_url, source_timeout=0.3, max_attempts=2, max_rows=2)
    config = make(data)
    await sync_types(db, config)
    await add_users(db, ["u1", "u2"])
    connect = connector(db_url)

    rows = await fetch(
        SqlSource(query="SELECT id, created_at, 1.5::numeric AS n FROM users ORDER BY id"),
        config,
        connect,
    )
    assert [r["id"] for r in rows["rows"]] == ["u1", "u2"]
    assert rows["rows"][0]["n"] == "1.5"
    assert datetime.fromisoformat(rows["rows"][0]["created_at"]).tzinfo is not None
    with pytest.raises(SourceError, match="over 2 rows"):
        await fetch(SqlSource(query="SELECT * FROM generate_series(1, 3)"), config, connect)

    sources = {
        # The columns of its one row are the event's data.
        "counted": "SELECT 'Weekly' AS title, count(*) || ' readers' AS intro,"
        " 'https://x/nl' AS url FROM users",
        "writes": "UPDATE users SET email = 'hijacked@example.com' RETURNING 'a' AS title",
        "sneaky": "WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone",
        # In one string, COMMIT would end the read-only transaction: refused.
        "escape": "COMMIT; DELETE FROM users",
        "slow": "SELECT pg_sleep(5) AS title",
    }
    for name, query in sources.items():
        source = {"kind": "sql", "query": query, "shape": "row"}
        data["schedules"] = {name: newsletter(source=source)}
        await add_schedule(db, name, make(data).schedules[name])
    now = datetime.now(UTC).replace(microsecond=0)
    results = {n: await run_schedule(connect, config, n, now, "manual") for n in sources}

    assert results["counted"].outcome == "sent", results["counted"]
    (event,) = await events_of(db)
    assert event[4]["intro"] == "2 readers"
    for name in ("writes", "sneaky"):
        assert (results[name].outcome, results[name].attempts) == ("failed", 1), name
        assert "read-only transaction" in (results[name].error or ""), results[name]
        (run,) = await runs_of(db, name)
        assert run[2] == "failed" and "read-only transaction" in run[4]
    assert results["escape"].outcome == "failed"
    assert "multiple commands" in (results["escape"].error or "")
    cur = await db.execute("SELECT id, email FROM users ORDER BY id")
    assert await cur.fetchall() == [("u1", "u1@test.example"), ("u2", "u2@test.example")]
    # A statement past source_timeout is cancelled, and retried as a transient failure.
    assert (results["slow"].outcome, results["slow"].attempts) == ("failed", 2)
    assert "statement timeout" in (results["slow"].error or "")


# -- the Procrastinate backend in running dispatchers -----------------------------------------


async def test_a_running_dispatcher_fires_a_due_schedule_on_its_tick(db_url: str, db: Conn) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly-newsletter": newsletter()}
    config = make(data)
    await add_users(db, ["u1", "u2"])
    async with running(config, db_url):
        state = await backend.current_state(db)
        assert state is not None and state.backend == "procrastinate"
        at = await make_due(db, "weekly-newsletter")

        async def sent() -> bool:
            return [r[1:3] for r in await runs_of(db, "weekly-newsletter")] == [
                ("procrastinate", "sent")
            ]

        await wait_until(sent, 20, "the dispatcher's tick to fire the schedule")
    ((producer, key, _, _, _),) = await events_of(db)
    assert (producer, key) == (
        PRODUCER,
        f"schedule:weekly-newsletter:{at.astimezone(UTC).isoformat()}",
    )
    schedule = await get_schedule(db, "weekly-newsletter")
    assert schedule is not None and schedule.next_run_at is not None
    assert schedule.next_run_at == next_run("0 9 * * 1", "Europe/Berlin", datetime.now(UTC))
    cur = await db.execute("SELECT count(*) FROM notifications")
    assert await cur.fetchone() == (2,)


async def test_two_dispatchers_fire_each_tick_once(db_url: str, db: Conn) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly-newsletter": newsletter()}
    config = make(data)
    await add_users(db, ["u1", "u2"])
    name = "weekly-newsletter"
    async with running(config, db_url, name="one"), running(config, db_url, name="two"):
        first = await make_due(db, name)

        async def sent(n: int) -> bool:
            return [r[2] for r in await runs_of(db, name)] == ["sent"] * n

        await wait_until(lambda: sent(1), 20, "the first run")
        # Both dispatchers tick every second; several ticks pass.
        await asyncio.sleep(2.5)
        assert len(await runs_of(db, name)) == 1
        # The clock reaches the schedule's time again.
        await db.execute(
            "UPDATE schedules SET next_run_at = %s WHERE name = %s",
            [first + timedelta(seconds=1), name],
        )
        await wait_until(lambda: sent(2), 20, "the second run")
        await asyncio.sleep(2.5)
    runs = await runs_of(db, name)
    assert [r[0] for r in runs] == [first, first + timedelta(seconds=1)]
    assert len(await events_of(db)) == 2
    assert await scalar(db, "SELECT count(*) FROM notifications") == 4


async def test_readyz_shows_the_scheduler_backend(db_url: str, db: Conn) -> None:
    data = schedule_data(db_url)
    async with running_api(db_url, **api_config(data)) as api:
        before = (await api.get("/readyz")).json()
        assert before["scheduler"]["backend"] is None
        await backend.sync(db_url, make(data), chosen_by="test")
        ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "detail": None,
        "scheduler": {
            "backend": "procrastinate",
            "detail": "configured ([scheduler].backend = procrastinate)",
        },
    }


async def test_auto_falls_back_to_procrastinate_where_pg_cron_is_not(db_url: str, db: Conn) -> None:
    if await scalar(db, "SELECT current_setting('cron.database_name', true)"):
        pytest.skip("this server has pg_cron (tests/integration/test_pg_cron.py covers it)")
    data = schedule_data(db_url, backend="auto")
    report = await backend.sync(db_url, make(data), chosen_by="test")
    assert (report.backend, report.detail) == (
        "procrastinate",
        "auto: pg_cron is not preloaded (shared_preload_libraries)",
    )
    with pytest.raises(backend.SchedulerUnavailable, match="backend is pg_cron, but pg_cron is"):
        await backend.sync(db_url, make(schedule_data(db_url, backend="pg_cron")), chosen_by="t")
