"""Configuration of scheduled work: the backend that runs it, retention, and periodic
schedules declared in the file. Part of Config (service/config/load.py)."""

from __future__ import annotations

import zoneinfo
from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
from croniter import croniter

from service.config.base import Backoff, Name

# -- scheduler: service/schedule/backend.py
SchedulerBackend = Literal["pg_cron", "procrastinate"]


class SchedulerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which backend runs scheduled work: pg_cron where installed, else the dispatchers'
    Procrastinate periodic tasks ("auto" chooses); and how a schedule's run treats its
    data source (docs/scheduler.md)."""

    backend: Literal["auto", "pg_cron", "procrastinate"] = "auto"
    # How often the Procrastinate backend fires due schedules and flushes digests (cron,
    # optionally with a sixth field for seconds). pg_cron's jobs tick every minute.
    tick: str = "* * * * *"
    # Each attempt at a data source: the HTTP request's timeout, the SQL statement_timeout.
    source_timeout: timedelta = timedelta(seconds=10)
    # Attempts at a failing source within one run, with this backoff between them; a run
    # that still fails is recorded as failed and the schedule goes on to its next time.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    retry_backoff: Backoff = Backoff(initial=timedelta(seconds=2), cap=timedelta(minutes=1))
    # Most rows a SQL source may return (shape "rows").
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # When retention ([retention]) runs, in UTC, under either backend.
    retention_cron: str = "17 3 * * *"

    def __post_init__(self) -> None:
        check_cron(self.tick, "scheduler.tick", seconds=True)
        check_cron(self.retention_cron, "scheduler.retention_cron")
        if self.source_timeout <= timedelta(0):
            raise ValueError("scheduler.source_timeout: must be positive")


# -- retention: service/schedule/retention.py
class RetentionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How long finished rows are kept before they are pruned. Ages count from a row's last
    change (updated_at; a digest item's flushed_at); pending rows are never pruned."""

    # Delivered and suppressed outbox rows, with their attempts.
    delivered: timedelta = timedelta(days=7)
    # Rows of inbox channels: GET /v1/inbox lists a notification while its inbox row is
    # kept, so this is how far back a user's inbox goes.
    inbox: timedelta = timedelta(days=90)
    # Dead letters (status 'failed': refused; 'dead': retries or age ran out) are what ops
    # look into and bin/redeliver requeues; they keep their attempts, which say why.
    dead: timedelta = timedelta(days=30)
    # Attempts of delivered and suppressed rows kept longer than this (inbox rows) go
    # before their row; others go with their row.
    attempts: timedelta = timedelta(days=30)
    # Digest items already flushed into a notification.
    digest_items: timedelta = timedelta(days=7)
    # The live inbox's change log (inbox_changes): a stream resumes from a position up to
    # this old; an older one is told to reload its list.
    inbox_changes: timedelta = timedelta(days=1)
    # Rows of each kind per batch, each batch its own short transaction; and a pause
    # between batches, so that a large backlog leaves the database to the intake. These
    # kept the intake's p99 within 2x while 1,000,000 rows went (docs/performance.md).
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 250
    pause: timedelta = timedelta(milliseconds=10)

    def __post_init__(self) -> None:
        for key in ("delivered", "inbox", "dead", "attempts", "digest_items", "inbox_changes"):
            if getattr(self, key) <= timedelta(0):
                raise ValueError(f"retention.{key}: must be positive")
        if self.pause < timedelta(0):
            raise ValueError("retention.pause: must not be negative")


# -- periodic schedules: service/schedule_store.py
def check_cron(expression: str, where: str, *, seconds: bool = False) -> None:
    """A cron expression croniter evaluates: five fields (minute hour day month weekday),
    or six with seconds where `seconds`."""
    fields = len(expression.split())
    if fields not in ((5, 6) if seconds else (5,)) or not croniter.is_valid(expression):
        raise ValueError(
            f"{where}: {expression!r} is not a cron expression (minute hour day month weekday)"
        )


def check_timezone(name: str, where: str) -> None:
    # "localtime" names whatever zone the machine is set to: not the same on every server.
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}: unknown time zone {name!r} (want e.g. Europe/Berlin)") from None
    if name == "localtime":
        raise ValueError(f"{where}: unknown time zone {name!r} (want e.g. Europe/Berlin)")


class StaticSource(
    msgspec.Struct, tag="static", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    """The event data, as written here."""

    data: dict[str, Any] = msgspec.field(default_factory=dict)


class SqlSource(
    msgspec.Struct, tag="sql", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    """A read-only query, run at each run: shape "rows" gives {"rows": [{column: value}]},
    "row" the columns of its only row."""

    query: str
    shape: Literal["rows", "row"] = "rows"

    def __post_init__(self) -> None:
        if not self.query.strip():
            raise ValueError("source.query: must not be empty")


class HttpSource(
    msgspec.Struct, tag="http", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    """A URL fetched (GET) at each run; its JSON object is the event data."""

    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("source.url: an http(s) URL is needed")


Source = StaticSource | SqlSource | HttpSource


class Audience(
    msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, frozen=True, kw_only=True
):
    """Who gets a schedule's events: exactly one of these, as notify_event() takes them."""

    topic: str | None = None
    all: bool = False
    user_ids: list[str] | None = None

    def __post_init__(self) -> None:
        given = (self.topic is not None) + self.all + (self.user_ids is not None)
        if given != 1:
            raise ValueError("audience: exactly one of topic, all = true, user_ids")


class ScheduleSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A periodic event: an event of `event_type` for `audience`, with the data `source`
    gives, at the times `cron` names in `timezone`. Declared in the config (seeded into the
    schedules table at start-up, which then follows the file) or made by bin/schedules."""

    cron: str
    event_type: Name
    timezone: str = "UTC"
    audience: Audience
    source: Source = StaticSource()
    enabled: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        check_cron(self.cron, "cron")
        check_timezone(self.timezone, "timezone")
