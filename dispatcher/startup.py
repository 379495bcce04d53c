"""What a dispatcher does once, before its loops start (dispatcher/main.py hands it to
`Dispatcher.run`, which calls it as soon as its pool is open).

The config's channels, categories and event types are mirrored into the notify_* tables
the SQL fan-out reads (service/notify/catalog.py); then the scheduler backend is chosen
(logged) and pg_cron's jobs kept in step: after the catalog, because the config's
schedules name its event types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from dispatcher.transport_base import Pool
from service.config.load import Config
from service.notify.catalog import sync_catalog
from service.notify.templates import TypeTemplates
from service.schedule import backend as scheduler

StartUp = Callable[[Pool], Awaitable[None]]


def start_up(
    config: Config, database_url: str, templates: Mapping[str, TypeTemplates], *, name: str
) -> StartUp:
    """The start-up of dispatcher `name`, to run on its pool."""

    async def run(pool: Pool) -> None:
        if config.event_types:
            async with pool.connection() as conn:
                await sync_catalog(conn, config, templates)
        await scheduler.sync(database_url, config, chosen_by=name)

    return run
