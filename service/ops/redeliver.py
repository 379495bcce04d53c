"""Redelivery: put outbox rows that will not be delivered (again) back in the queue.

The one code path of `bin/redeliver` (service/ops/redeliver_cli.py) and the admin's
deliveries page: `candidates` lists the rows a RedeliverFilter selects, and
`requeue` puts chosen rows back, in one transaction with one audit_log row.

Outbox row states (`outbox.status`): pending, delivered, failed (the consumer or provider
refused the row for good: a permanent 4xx), dead (its retries or its age ran out) and
suppressed (never to be sent). A requeue takes failed, dead and delivered rows (resending
a delivered one, e.g. after the consumer lost data) and makes them pending with a fresh
retry budget; pending and suppressed rows are never taken. Running one twice is harmless:
requeued rows are pending, and pending rows are never selected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from service import audit
from service.config.load import Config
from service.errors import unknown_name
from service.sql import q
from service.wake import WAKE_QUEUE, WAKE_TASK

Status = Literal["failed", "dead", "delivered"]
# The row states a requeue can take, and those it takes unless told otherwise.
STATUSES: tuple[Status, ...] = ("failed", "dead", "delivered")
DEFAULT_STATUSES: tuple[Status, ...] = ("failed", "dead")
# Rows per requeue statement: bounds each statement's locks and array parameter, while
# the whole requeue stays one transaction.
CHUNK = 1000
# Ids written out in an audit row's target when the rows were chosen one by one.
AUDIT_IDS = 100


class RedeliverFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which rows to requeue. Every field narrows the selection; None (or empty) = any."""

    # Consumers or notification channels (outbox.consumer).
    consumers: tuple[str, ...] | None = None
    # Seen marks' tags.
    tags: tuple[str, ...] | None = None
    # Notifications' types (events' `type`).
    event_types: tuple[str, ...] | None = None
    ids: tuple[int, ...] | None = None
    # Bounds on the row's creation time (the mark's or the notification's).
    since: datetime | None = None
    until: datetime | None = None
    statuses: tuple[Status, ...] = DEFAULT_STATUSES

    def __post_init__(self) -> None:
        if not self.statuses:
            raise ValueError("statuses: give at least one of failed, dead, delivered")
        wrong = [s for s in self.statuses if s not in STATUSES]
        if wrong:
            raise ValueError(f"statuses: {wrong[0]!r} cannot be requeued (only {STATUSES})")

    def narrowed(self) -> bool:
        """Whether anything beyond the statuses narrows it (else it takes every such row)."""
        return any((self.consumers, self.tags, self.event_types, self.ids, self.since, self.until))


class UnknownName(ValueError):
    """A filter names a consumer, tag or event type the config does not have."""


def check_names(flt: RedeliverFilter, config: Config) -> None:
    """Refuse a filter naming what the config does not (UnknownName, which lists the valid
    names): a typo would otherwise select nothing, and look like nothing to requeue."""
    for kind, given, known in (
        ("consumer or channel", flt.consumers, [*config.consumers, *config.channels]),
        ("tag", flt.tags, list(config.tags)),
        ("event type", flt.event_types, list(config.event_types)),
    ):
        for name in given or ():
            if name not in known:
                raise UnknownName(unknown_name(kind, name, known))


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    consumer: str
    tag: str | None
    event_type: str | None
    status: Status
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class Requeued(msgspec.Struct, frozen=True, kw_only=True):
    """What a requeue did: rows made pending per consumer, and per state they were in."""

    by_consumer: dict[str, int]
    # status -> consumer -> rows, for the states the rows were in before.
    before: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return sum(self.by_consumer.values())


def _filter_params(flt: RedeliverFilter, limit: int | None) -> dict[str, object]:
    def listed(values: Sequence[Any] | None) -> list[Any] | None:
        return list(values) if values else None

    return {
        "consumers": listed(flt.consumers),
        "tags": listed(flt.tags),
        "event_types": listed(flt.event_types),
        "ids": listed(flt.ids),
        "since": flt.since,
        "until": flt.until,
        "statuses": list(flt.statuses),
        "limit": limit,
    }


def _candidate(row: tuple[Any, ...]) -> Candidate:
    return Candidate(
        id=row[0],
        consumer=row[1],
        tag=row[2],
        event_type=row[3],
        status=row[4],
        attempts=row[5],
        last_error=row[6],
        created_at=row[7],
        updated_at=row[8],
    )


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    # Sorted, so that every chunk (and every concurrent requeue) locks in id order.
    ordered = sorted(set(ids))
    return [ordered[start : start + CHUNK] for start in range(0, len(ordered), CHUNK)]


def _requeue_params(chunk: list[int], statuses: Sequence[Status]) -> dict[str, object]:
    return {
        "ids": chunk,
        "statuses": list(statuses),
        "wake_queue": WAKE_QUEUE,
        "wake_task": WAKE_TASK,
    }


def _tally(rows: Sequence[tuple[Any, ...]]) -> Requeued:
    by_consumer: dict[str, int] = {}
    before: dict[str, dict[str, int]] = {}
    for consumer, status, count in rows:
        by_consumer[consumer] = by_consumer.get(consumer, 0) + count
        per_status = before.setdefault(status, {})
        per_status[consumer] = per_status.get(consumer, 0) + count
    return Requeued(by_consumer=dict(sorted(by_consumer.items())), before=before)


def _audit(
    ids: Sequence[int], statuses: Sequence[Status], chosen_by: RedeliverFilter | None
) -> str:
    """The audit row's target: the filter the rows were chosen with, else their ids."""
    if chosen_by is not None:
        described = {k: v for k, v in msgspec.to_builtins(chosen_by).items() if v is not None}
    else:
        described = {"ids": sorted(ids)[:AUDIT_IDS], "statuses": list(statuses)}
    described["rows"] = len(set(ids))
    return msgspec.json.encode(described).decode()


def _after(done: Requeued) -> dict[str, object]:
    return {"requeued": done.total, "by_consumer": done.by_consumer}


async def candidates(
    conn: AsyncConnection[Any], flt: RedeliverFilter, limit: int | None = None
) -> list[Candidate]:
    """The rows `flt` selects, by id (at most `limit`); nothing is locked or changed."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(q("redeliver_candidates"), _filter_params(flt, limit))
        return [_candidate(row) for row in await cur.fetchall()]


async def requeue(
    conn: AsyncConnection[Any],
    ids: Sequence[int],
    actor: str,
    *,
    statuses: Sequence[Status] = STATUSES,
    chosen_by: RedeliverFilter | None = None,
    client_ip: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Requeued:
    """Requeue these rows, those still in one of `statuses`, and wake their dispatchers:
    one transaction, with one audit row (action 'redeliver'; `chosen_by` names the filter
    the ids came from, for the record). `progress` is told how many rows each statement
    covered (bin/redeliver's progress bar)."""
    rows: list[tuple[Any, ...]] = []
    async with conn.transaction():
        async with conn.cursor(row_factory=tuple_row) as cur:
            for chunk in _chunks(ids):
                await cur.execute(q("redeliver_requeue"), _requeue_params(chunk, statuses))
                rows += await cur.fetchall()
                if progress is not None:
                    progress(len(chunk))
        done = _tally(rows)
        await audit.record(
            conn,
            actor,
            "redeliver",
            _audit(ids, statuses, chosen_by),
            before=done.before,
            after=_after(done),
            client_ip=client_ip,
        )
    return done
