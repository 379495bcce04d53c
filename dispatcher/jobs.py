"""The dispatcher's Procrastinate side: the tasks it runs and a worker that survives failures.

- `dispatcher.wake` (queue "dispatch"): deferred by the write paths, one pending per
  consumer; it only wakes that consumer's claim loop.
- `maintenance.purge_expired_seen_marks`: every ten minutes, forgets expired seen marks.
  It runs here because pg_cron is not everywhere (the embedded default lacks it).
- `notify.materialize` (queue "notify"): the fan-out of a large audience or a future
  send_at, deferred by notify_event() in SQL.
Each queue gets its own worker, so a long fan-out never holds up the wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import procrastinate
import psycopg

from service.config import NotifySettings
from service.database import CONNECTION_OPTIONS
from service.notify.fanout import MATERIALIZE_QUEUE, MATERIALIZE_TASK, materialize_parallel
from service.seen.store import purge_expired_marks
from service.wake import WAKE_QUEUE, WAKE_TASK

log = logging.getLogger(__name__)

PURGE_TASK = "maintenance.purge_expired_seen_marks"
PURGE_CRON = "*/10 * * * *"
# A failed worker is restarted after this long, doubling up to RESTART_MAX_S.
RESTART_S = 1.0
RESTART_MAX_S = 30.0


def jobs_app(
    database_url: str, name: str, wake: Callable[[str], None], notify: NotifySettings
) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(
        conninfo=database_url,
        min_size=1,
        max_size=3,
        kwargs={"options": CONNECTION_OPTIONS, "application_name": f"wake-{name}"},
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
        covered, done = await materialize_parallel(database_url, event_id, notify.chunk_size)
        log.info(
            "event %s: %d recipients materialized here%s",
            event_id,
            covered,
            "" if done else "; another run holds the rest",
        )

    return app


async def run_jobs_worker(
    make_app: Callable[[], procrastinate.App], queue: str, *, name: str, polling_s: float
) -> None:
    """Run a Procrastinate worker on one queue; restart it if it fails (for wake-ups, the
    claim loops' sweep covers the gap)."""
    pause = RESTART_S
    while True:
        app = make_app()
        try:
            async with app.open_async():
                await app.run_worker_async(
                    queues=[queue],
                    name=name,
                    concurrency=1,
                    wait=True,
                    listen_notify=True,
                    fetch_job_polling_interval=polling_s,
                    delete_jobs="successful",
                    install_signal_handlers=False,
                )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s worker failed (%s); restarting in %.0f s", queue, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX_S)
