"""The seen write path: marks, outbox rows and dispatcher wake-ups in one transaction,
and the purge that forgets marks once their tag's remember_for has passed.

`GroupCommitter` gathers concurrent requests and writes them with one set-based statement
in one transaction, answering each request only after that commit: the cost of a commit
(an fsync) is shared by everything that arrived while the previous one was in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from service.database import database_unreachable
from service.inbox_signal import record_inbox_changes
from service.logs import request_context
from service.metrics import observe_commit
from service.sql import q
from service.wake import WAKE_QUEUE, WAKE_TASK

log = logging.getLogger(__name__)

MarkKey = tuple[str, str, str]
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class MarkRow:
    tag: str
    item_id: str
    subject_key: str
    subject_kind: str
    subject: msgspec.Struct
    # None: the tag has no consumer, the mark is only remembered.
    consumer: str | None
    remember_for_s: float
    # The W3C traceparent stored with the outbox row (service/tracing.py).
    traceparent: str | None = None

    @property
    def key(self) -> MarkKey:
        return (self.tag, self.item_id, self.subject_key)


class StorageUnavailable(Exception):
    """The database could not be reached or did not answer: safe for the client to retry."""


def _params(rows: Sequence[MarkRow]) -> dict[str, object]:
    return {
        # MarkRow's fields are the recordset's columns (see record_seen_marks).
        "marks": _encode(rows).decode(),
        "wake_queue": WAKE_QUEUE,
        "wake_task": WAKE_TASK,
    }


async def record_marks(
    conn: psycopg.AsyncConnection[Any], rows: Sequence[MarkRow], *, inbox_tag: str | None = None
) -> set[MarkKey]:
    """Write rows in the caller's transaction; the keys of the marks that were new.

    With `inbox_tag` (notify.seen_tag), a client's new mark of that tag also goes to the
    live inbox's change log, in the same transaction; a batch without one costs nothing
    more.
    """
    if inbox_tag is None or not any(_inbox_mark(r.key, inbox_tag) for r in rows):
        cur = await conn.execute(q("record_seen_marks"), _params(rows))
        return set(await cur.fetchall())
    async with conn.transaction():
        cur = await conn.execute(q("record_seen_marks"), _params(rows))
        new: set[MarkKey] = set(await cur.fetchall())
        seen = sorted(k for k in new if _inbox_mark(k, inbox_tag))
        if seen:
            items = [(k[2].removeprefix(CLIENT_KEY), k[1]) for k in seen]
            await record_inbox_changes(conn, "seen", items)
    return new


# A client's subject key (service/identity.py caller_for): "client:" + user id.
CLIENT_KEY = "client:"


def _inbox_mark(key: MarkKey, inbox_tag: str) -> bool:
    return key[0] == inbox_tag and key[2].startswith(CLIENT_KEY)


@dataclass(slots=True)
class _Waiter:
    rows: Sequence[MarkRow]
    future: asyncio.Future[set[MarkKey]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter:
    """Batches concurrent submissions into shared transactions.

    At most `max_inflight` transactions run at once. While they are all busy, new
    submissions queue up, and the next free slot takes them all (up to `max_rows`) in
    one statement. An idle system therefore commits a lone request at once, and a busy
    one batches automatically, with no fixed window to wait out.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_rows: int = 2000,
        max_inflight: int = 4,
        inbox_tag: str | None = None,
    ) -> None:
        self._pool = pool
        self._inbox_tag = inbox_tag
        self._max_rows = max_rows
        self._slots = asyncio.Semaphore(max_inflight)
        self._queue: list[_Waiter] = []
        self._drainer_waiting = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.transactions = 0

    async def submit(self, rows: Sequence[MarkRow]) -> set[MarkKey]:
        waiter = _Waiter(rows)
        self._queue.append(waiter)
        if not self._drainer_waiting:
            self._spawn()
        # A client that hangs up cancels only its own future: its rows are still written
        # with the batch (the retry it may send is then a duplicate), and _settle skips a
        # future that is already done, so no outcome is left unretrieved.
        return await waiter.future

    def _spawn(self) -> None:
        self._drainer_waiting = True
        task = asyncio.create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        # The task was spawned on some request's behalf, but commits a batch of many: its
        # lines name all their traces, not that one request's.
        request_context.set(None)
        async with self._slots:
            self._drainer_waiting = False
            batch: list[_Waiter] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].rows) <= self._max_rows):
                waiter = self._queue.pop(0)
                batch.append(waiter)
                count += len(waiter.rows)
            if self._queue and not self._drainer_waiting:
                self._spawn()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Waiter]) -> None:
        try:
            new = await self._write([row for w in batch for row in w.rows])
        except StorageUnavailable as exc:
            for w in batch:
                _settle(w, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            # One request's rows broke the shared statement: write each request on its own
            # so that only the culprit fails.
            log.warning(
                "group commit of %d requests failed (%s); retrying one by one",
                len(batch),
                exc,
                extra={"trace_ids": _trace_ids(batch)},
            )
            for w in batch:
                try:
                    _settle(w, await self._write(w.rows))
                except Exception as single_exc:
                    _settle(w, single_exc)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "group commit of %d requests",
                len(batch),
                extra={"new_marks": len(new), "trace_ids": _trace_ids(batch)},
            )
        observe_commit(len(batch), sum(len(w.rows) for w in batch))
        # A mark sent by several requests of one batch was written once: it is new for the
        # first of them only, and a repeat for the others (as if they had come one by one).
        unclaimed = set(new)
        for w in batch:
            mine = unclaimed.intersection(row.key for row in w.rows)
            unclaimed -= mine
            _settle(w, mine)

    async def _write(self, rows: Sequence[MarkRow]) -> set[MarkKey]:
        try:
            # record_seen_marks is a single statement, so on the API's autocommit pool it
            # is its own transaction: all of a batch's rows commit together or not at all.
            async with self._pool.connection() as conn:
                new = await record_marks(conn, rows, inbox_tag=self._inbox_tag)
            self.transactions += 1
            return new
        except (PoolTimeout, psycopg.Error) as exc:
            if not database_unreachable(exc):
                raise
            raise StorageUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _trace_ids(batch: Sequence[_Waiter]) -> list[str]:
    """The trace ids of a batch's requests (a traceparent's second field)."""
    return sorted({row.traceparent[3:35] for w in batch for row in w.rows[:1] if row.traceparent})


def _settle(waiter: _Waiter, outcome: set[MarkKey] | BaseException) -> None:
    if waiter.future.done():
        return
    if isinstance(outcome, BaseException):
        waiter.future.set_exception(outcome)
    else:
        waiter.future.set_result(outcome)


PURGE_CHUNK = 5000


async def purge_expired_marks(conn: psycopg.AsyncConnection[Any], chunk: int = PURGE_CHUNK) -> int:
    """Forget every mark past its remember_for, in chunks (each its own short statement on
    an autocommit connection, so a big backlog never holds locks for long)."""
    total = 0
    while True:
        cur = await conn.execute(q("purge_expired_seen_marks"), {"limit": chunk})
        row = await cur.fetchone()
        purged = int(row[0]) if row else 0
        total += purged
        if purged < chunk:
            return total
