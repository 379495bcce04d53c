"""The dispatcher's Procrastinate side: the tasks it runs and a worker that survives failures.

- `dispatcher.wake` (queue "dispatch"): deferred by the write paths, one pending per
  consumer; it only wakes that consumer's claim loop.
- `maintenance.purge_expired_seen_marks`: every ten minutes, forgets expired seen marks.
  It runs here because pg_cron is not everywhere (the embedded default lacks it).
- `notify.materialize` (queue "notify"): the fan-out of a large audience or a future
  send_at, deferred by notify_event() in SQL.
- Scheduled work (queue "schedule", docs/scheduler.md): `schedule.run` makes one run of a
  periodic schedule, deferred by fire_due_schedules() in SQL, whichever backend fired it.
  The Procrastinate backend's ticks are periodic tasks here: `scheduler.fire_due` and
  `digests.flush` on [scheduler].tick, `retention.prune` on [scheduler].retention_cron;
  each does nothing while pg_cron is the active backend (scheduler_state).
Each queue gets its own worker, so a long fan-out never holds up the wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import procrastinate
import psycopg
import psycopg_pool

from service.config.load import Config
from service.database import CONNECTION_OPTIONS, RECONNECT_TIMEOUT_S
from service.notify.fanout import MATERIALIZE_QUEUE, MATERIALIZE_TASK, materialize_parallel
from service.schedule.backend import current_state
from service.schedule.digests import flush_due
from service.schedule.retention import prune
from service.schedule.runner import run_schedule
from service.schedule_store import RUN_TASK, SCHEDULE_QUEUE, FiredBy, fire_due
from service.seen.store import purge_expired_marks
from service.wake import WAKE_QUEUE, WAKE_TASK

log = logging.getLogger(__name__)

PURGE_TASK = "maintenance.purge_expired_seen_marks"
PURGE_CRON = "*/10 * * * *"
FIRE_TASK = "scheduler.fire_due"
DIGESTS_TASK = "digests.flush"
RETENTION_TASK = "retention.prune"
# Runs side by side: a slow URL does not hold up the other schedules.
SCHEDULE_CONCURRENCY = 4
# A failed worker is restarted after this long, doubling up to RESTART_MAX_S: short, as
# while the wake-up worker is down an idle consumer waits for the sweep, and a restart
# against a database that is still down costs one failed connect.
RESTART_S = 0.2
RESTART_MAX_S = 2.0
# A worker that ran this long before it stopped starts over from RESTART_S.
HEALTHY_RUN_S = 10.0
JOBS_POOL_TIMEOUT_S = 3.0
JOBS_CONNECT_TIMEOUT_S = 3


class _BoundedOpenPool(psycopg_pool.AsyncConnectionPool):
    """Procrastinate opens its pool waiting up to 30 s for the first connection: a worker
    restarted while the database is still down sat there after the database was back, as
    the pool gives up reconnecting after RECONNECT_TIMEOUT_S. Failing early lets
    run_jobs_worker start it again at once."""

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (the signature it overrides)
        await super().open(wait, min(timeout, JOBS_POOL_TIMEOUT_S))


def jobs_app(
    database_url: str, name: str, wake: Callable[[str], None], config: Config
) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(
        pool_factory=_BoundedOpenPool,
        conninfo=database_url,
        min_size=1,
        max_size=3,
        # Bounded waits: on a stop, Procrastinate unregisters its worker through this pool
        # even when the database is gone, and the default 30 s held up a dispatcher's exit.
        # (Procrastinate checks each connection as it is handed out itself.)
        timeout=JOBS_POOL_TIMEOUT_S,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        kwargs={
            "options": CONNECTION_OPTIONS,
            "application_name": f"wake-{name}",
            "connect_timeout": JOBS_CONNECT_TIMEOUT_S,
        },
    )
    app = procrastinate.App(connector=connector)

    @app.task(name=WAKE_TASK, queue=WAKE_QUEUE)
    async def wake_task(consumer: str) -> None:
        wake(consumer)

    # Procrastinate defers one job per tick however many dispatchers run, and the queueing
    # lock keeps a slow purge from piling up.
    @app.periodic(cron=PURGE_CRON, periodic_id="purge-expired-marks")
    @app.task(name=PURGE_TASK, queue=WAKE_QUEUE, queueing_lock=PURGE_TASK, pass_context=False)
    async def purge(timestamp: int) -> None:
        async with await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, options=CONNECTION_OPTIONS
        ) as conn:
            purged = await purge_expired_marks(conn)
        if purged:
            log.info("purged %d expired seen marks", purged)

    # A chunk left by a worker that died is claimed again, so a retried job resumes.
    @app.task(name=MATERIALIZE_TASK, queue=MATERIALIZE_QUEUE, pass_context=False)
    async def materialize(event_id: str) -> None:
        covered, done = await materialize_parallel(database_url, event_id, config.notify.chunk_size)
        log.info(
            "event %s: %d recipients materialized here%s",
            event_id,
            covered,
            "" if done else "; another run holds the rest",
        )

    _schedule_tasks(app, database_url, config)
    return app


def _schedule_tasks(app: procrastinate.App, database_url: str, config: Config) -> None:
    """Scheduled work (docs/scheduler.md): the runs, and the Procrastinate backend's ticks."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, options=CONNECTION_OPTIONS
        ) as conn:
            yield conn

    async def active(conn: psycopg.AsyncConnection[Any]) -> bool:
        state = await current_state(conn)
        return state is not None and state.backend == "procrastinate"

    @app.task(name=RUN_TASK, queue=SCHEDULE_QUEUE, pass_context=False)
    async def run(name: str, scheduled_for: str, fired_by: str) -> None:
        via: FiredBy = "pg_cron" if fired_by == "pg_cron" else "procrastinate"
        await run_schedule(connect, config, name, datetime.fromisoformat(scheduled_for), via)

    # Procrastinate defers one job per tick however many dispatchers run, and the
    # queueing locks keep a slow one from piling up.
    @app.periodic(cron=config.scheduler.tick, periodic_id="scheduler-tick")
    @app.task(name=FIRE_TASK, queue=SCHEDULE_QUEUE, queueing_lock=FIRE_TASK, pass_context=False)
    async def fire(timestamp: int) -> None:
        async with connect() as conn:
            # A no-op in SQL unless this backend is the active one.
            fired = await fire_due(conn, "procrastinate")
        if fired:
            log.info("fired %d due schedules", fired)

    @app.periodic(cron=config.scheduler.tick, periodic_id="digests-tick")
    @app.task(
        name=DIGESTS_TASK, queue=SCHEDULE_QUEUE, queueing_lock=DIGESTS_TASK, pass_context=False
    )
    async def flush(timestamp: int) -> None:
        async with connect() as conn:
            sent = await flush_due(conn) if await active(conn) else 0
        if sent:
            log.info("sent %d digests", sent)

    @app.periodic(cron=config.scheduler.retention_cron, periodic_id="retention")
    @app.task(
        name=RETENTION_TASK,
        queue=SCHEDULE_QUEUE,
        queueing_lock=RETENTION_TASK,
        pass_context=False,
    )
    async def retention(timestamp: int) -> None:
        async with connect() as conn:
            if not await active(conn):
                return
            pruned = await prune(conn, config.retention)
        log.info("retention: %s", ", ".join(f"{k} {v}" for k, v in pruned.items()))


async def run_jobs_worker(
    make_app: Callable[[], procrastinate.App],
    queue: str,
    *,
    name: str,
    polling_s: float,
    concurrency: int = 1,
) -> None:
    """Run a Procrastinate worker on one queue until cancelled; restart it whenever it
    stops (for wake-ups, the claim loops' sweep covers the gap).

    It stops on its own after a database outage: its listener cannot reconnect while the
    server is down, and Procrastinate then stops the whole worker ("Side task listener
    failed ... stopping worker") and returns normally if the server is back by the time
    it unregisters. Returning is thus no sign of a requested stop: only cancellation is.
    """
    pause = RESTART_S
    while True:
        app = make_app()
        started = time.monotonic()
        try:
            async with app.open_async():
                await app.run_worker_async(
                    queues=[queue],
                    name=name,
                    concurrency=concurrency,
                    wait=True,
                    listen_notify=True,
                    fetch_job_polling_interval=polling_s,
                    delete_jobs="successful",
                    install_signal_handlers=False,
                )
            reason = "stopped"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"failed ({exc})"
        if time.monotonic() - started > HEALTHY_RUN_S:
            pause = RESTART_S
        log.warning("%s worker %s; restarting in %.1f s", queue, reason, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, RESTART_MAX_S)
