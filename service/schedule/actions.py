"""The scheduled-work half as the admin panel drives it: "run now" and pg_cron's jobs
following a change, the same code bin/schedules runs. service/app.py hands one to the
process State (service/state.py's ScheduleActions), so the panel calls it without
importing this package."""

from __future__ import annotations

import logging
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from service.config.load import Config
from service.schedule import backend
from service.schedule.runner import run_schedule
from service.schedule_store import RunResult

log = logging.getLogger(__name__)


class PoolScheduleActions:
    """ScheduleActions over the app's pool and config."""

    def __init__(self, pool: AsyncConnectionPool, config: Config) -> None:
        self.pool = pool
        self.config = config

    async def run_now(self, name: str, at: datetime) -> RunResult:
        return await run_schedule(self.pool.connection, self.config, name, at, "manual")

    async def refresh_jobs(self) -> None:
        """Under pg_cron, its jobs follow the change at once, as after bin/schedules."""
        url = self.pool.conninfo
        if not isinstance(url, str):  # make_pool always gives it the URL; the type allows more
            return
        try:
            await backend.refresh_jobs(url, self.config)
        except backend.SchedulerUnavailable:
            # The change is stored; the next dispatcher start-up or `bin/schedules sync`
            # reconciles the jobs.
            log.exception("schedules: pg_cron jobs not refreshed")
