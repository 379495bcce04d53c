"""The process State: what every request handler needs, built once per app at start-up.

Core, like the rest of service/*.py: the capability packages (service/seen/,
service/notify/) read it through `state_of(request)`. It knows nothing of them beyond the
protocols of what it holds for them: `MarkWriter`, which the seen marks' group committer
satisfies, `EventTemplates`, which the notification templates satisfy, and
`ScheduleActions`, which service/schedule/actions.py satisfies for the admin panel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from service.apikeys import KeyVerifier
from service.config.load import Config
from service.errors import ApiError, api_error
from service.identity import Authenticator
from service.migrate import head_revision
from service.schedule_store import RunResult


class MarkWriter(Protocol):
    """How the API writes seen marks (service/seen/store.py's GroupCommitter in production,
    bench/naive.py's baseline in the benchmark): typed here so the core need not import
    the seen half, which is why its rows (MarkRows) are Any. It answers the keys of the
    rows that were new."""

    async def submit(self, rows: Sequence[Any]) -> set[tuple[str, str, str]]: ...

    async def close(self) -> None: ...


class RenderError(Exception):
    """A template failed on this notification's data (e.g. an optional variable left out).
    Here, beside EventTemplates, so that whoever renders (the API, the admin, the
    dispatcher) catches it without importing the notification half."""


class EventTemplates(Protocol):
    """An event type's compiled templates, as the API uses them (the notification half's
    TypeTemplates is one): typed here so the core need not import that half. `render`
    raises RenderError."""

    @property
    def required_data(self) -> frozenset[str]: ...

    def render(
        self, kind: str, locale: str | None, context: Mapping[str, Any]
    ) -> dict[str, Any]: ...


class ScheduleActions(Protocol):
    """What the admin panel has the scheduled-work half do (service/schedule/actions.py's
    PoolScheduleActions): typed here so that the panel and that half meet in the core
    rather than import each other."""

    async def run_now(self, name: str, at: datetime) -> RunResult:
        """Make schedule `name`'s run for `at` in place, as `bin/schedules run` does."""
        ...

    async def refresh_jobs(self) -> None:
        """Have pg_cron's jobs follow a changed schedule (if it is the active backend)."""
        ...


class State:
    """Everything a request needs, built once per process at start-up."""

    def __init__(
        self,
        config: Config,
        pool: AsyncConnectionPool,
        writer: MarkWriter,
        templates: Mapping[str, EventTemplates],
        schedules: ScheduleActions,
    ) -> None:
        self.config = config
        self.pool = pool
        # Built before the pool opens (see create_app): bad identity settings fail
        # start-up with nothing left running.
        self.auth = Authenticator(config.identity, config.environment)
        self.keys = KeyVerifier(pool)
        self.committer = writer
        self.head = head_revision()
        self.templates = templates
        self.schedules = schedules
        # Whether the event types are mirrored into the database yet. Until they are,
        # notify_event() would refuse every type as unknown: a 400 for what is an outage.
        self.catalog_synced = False
        self.background: set[asyncio.Task[None]] = set()

    def unavailable(self) -> ApiError:
        # A new error each time: raising one shared instance would chain every request's
        # traceback (and the frames it holds) onto it for as long as the outage lasts.
        return api_error("database_unavailable", retry_after=str(self.config.api.retry_after_s))

    def in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` until it ends or the app stops (which cancels it)."""
        # The set holds the task: the event loop keeps only a weak reference to it.
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


def state_of(request: Request) -> State:
    state: State = request.app.state.mn
    return state
