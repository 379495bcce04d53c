"""The dispatcher's database calls: claim a batch, complete it, publish consumer state.

One round trip each; the SQL is in sql/core/queries/dispatch.sql.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dispatcher.transport_base import Delivery, Outcome
from service.config.base import DeliveryPolicy
from service.inbox_signal import record_inbox_changes
from service.sql import q
from service.tracing import attempt_trace

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChannelClaim:
    """What a notification channel's claim needs beyond a consumer's: the contact kind it
    delivers to and the seen tag that suppresses escalations."""

    kind: str
    seen_tag: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The decided fate of one attempt: its outcome and, for a retry, the delay."""

    outcome: Outcome
    attempt: int
    delay_s: float | None = None
    # An inbox channel's row: (user id, notification id), logged for the live inbox once
    # it is recorded as delivered.
    inbox_item: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    outbox_id: int
    outcome: str  # delivered | retry | failed | dead
    applied: bool  # False: the lease had run out and another claim owns the row


def _deliveries(consumer: str, rows: Sequence[tuple[Any, ...]]) -> list[Delivery]:
    return [
        Delivery(
            outbox_id=row[0],
            event_id=row[1],
            consumer=consumer,
            ordering_key=row[2],
            payload=row[3],
            attempt=row[4],
            created_at=row[5],
            trace=attempt_trace(row[6], row[1]),
        )
        for row in rows
    ]


async def _claim(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    query: LiteralString,
    consumer: str,
    params: dict[str, object],
    acquire_s: float | None = None,
) -> list[Delivery]:
    async with pool.connection(acquire_s) as conn, conn.transaction():
        cur = await conn.execute(query, params)
        rows = await cur.fetchall()
    # RETURNING has no order; the transports and the ordered test read batches in id order.
    return sorted(_deliveries(consumer, rows), key=lambda d: d.outbox_id)


async def claim(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    consumer: str,
    *,
    limit: int,
    lease_s: float,
    dispatcher: str,
    buckets: Sequence[int],
    ordered: bool = False,
    channel: ChannelClaim | None = None,
    acquire_s: float | None = None,
) -> list[Delivery]:
    """Claim due rows of `consumer` in `buckets` (those this dispatcher leases,
    dispatcher/bucket_leases.py). `acquire_s`: the wait for a connection from the pool
    (None: the pool's)."""
    params: dict[str, object] = {
        "consumer": consumer,
        "buckets": None if buckets is None else list(buckets),
        "limit": limit,
        "lease_s": lease_s,
        "dispatcher": dispatcher,
    }
    if channel is not None:
        query = q("claim_notifications")
        params |= {"kind": channel.kind, "seen_tag": channel.seen_tag}
    else:
        query = q("claim_outbox_ordered") if ordered else q("claim_outbox")
    return await _claim(pool, query, consumer, params, acquire_s)


async def due_buckets(
    pool: AsyncConnectionPool[AsyncConnection[Any]], consumer: str, buckets: Sequence[int]
) -> set[int]:
    """The buckets of `buckets` that hold rows of `consumer` due now (due_buckets)."""
    async with pool.connection() as conn:
        cur = await conn.execute(q("due_buckets"), {"consumer": consumer, "buckets": list(buckets)})
        return {int(row[0]) for row in await cur.fetchall()}


async def forget_gone_contacts(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    consumer: str,
    batch: Sequence[Delivery],
    outcomes: Sequence[Outcome],
    remove: Callable[
        [AsyncConnectionPool[AsyncConnection[Any]], Sequence[tuple[str, str]]], Awaitable[int]
    ],
    what: str,
) -> None:
    """After a batch: forget the (user id, contact) pairs its outcomes name as gone (push
    tokens a provider refused, Web Push endpoints answered 404/410). A failure is only
    logged: the next send to them is answered the same way and tries again."""
    users = {d.outbox_id: str(d.payload.get("user_id")) for d in batch}
    gone = [(users[o.outbox_id], c) for o in outcomes for c in o.invalid_tokens]
    if not gone:
        return
    try:
        removed = await remove(pool, gone)
    except (PoolTimeout, psycopg.Error) as exc:
        log.warning("consumer %s: could not remove gone %s: %s", consumer, what, exc)
    else:
        log.info("consumer %s: removed %d gone %s", consumer, removed, what)


async def remove_push_devices(
    pool: AsyncConnectionPool[AsyncConnection[Any]], devices: Sequence[tuple[str, str]]
) -> int:
    """Forget (user id, token) pairs a push provider called invalid."""
    params: dict[str, object] = {
        "user_ids": [user for user, _ in devices],
        "tokens": [token for _, token in devices],
    }
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(q("remove_push_devices"), params)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def remove_webpush_subscriptions(
    pool: AsyncConnectionPool[AsyncConnection[Any]], gone: Sequence[tuple[str, str]]
) -> int:
    """Forget (user id, endpoint) pairs whose push service answered 404 or 410."""
    params: dict[str, object] = {
        "user_ids": [user for user, _ in gone],
        "endpoints": [endpoint for _, endpoint in gone],
    }
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(q("remove_webpush_subscriptions"), params)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def claim_ids(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    consumer: str,
    ids: Sequence[int],
    *,
    lease_s: float,
    dispatcher: str,
) -> list[Delivery]:
    params: dict[str, object] = {"ids": list(ids), "lease_s": lease_s, "dispatcher": dispatcher}
    return await _claim(pool, q("claim_outbox_ids"), consumer, params)


async def complete(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    consumer_name: str,
    consumer: DeliveryPolicy,
    completions: Sequence[Completion],
    *,
    dispatcher: str,
    buckets: Sequence[int] | None,
) -> list[Recorded]:
    """Record a batch's outcomes (complete_outbox); `buckets`: those its claim named (on a
    Citus cluster the statement then goes to their shard only), None for any."""
    if not completions:
        return []
    params: dict[str, object] = {
        "buckets": None if buckets is None else list(buckets),
        "ids": [c.outcome.outbox_id for c in completions],
        "attempts": [c.attempt for c in completions],
        "outcomes": [c.outcome.kind for c in completions],
        "delays_s": [c.delay_s for c in completions],
        "status_codes": [c.outcome.status_code for c in completions],
        "errors": [c.outcome.error for c in completions],
        "started_at": [c.outcome.started_at for c in completions],
        "durations_ms": [c.outcome.duration_ms for c in completions],
        "providers": [c.outcome.provider for c in completions],
        "max_attempts": consumer.max_attempts,
        "max_age_s": consumer.max_age.total_seconds() if consumer.max_age else None,
        "consumer": consumer_name,
        "dispatcher": dispatcher,
    }
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(q("complete_outbox"), params)
        recorded = [Recorded(row[0], row[1], row[2]) for row in await cur.fetchall()]
        done = {r.outbox_id for r in recorded if r.applied and r.outcome == "delivered"}
        items = [c.inbox_item for c in completions if c.inbox_item and c.outcome.outbox_id in done]
        if items:
            # The live inbox's change log, in the same transaction as the delivery.
            await record_inbox_changes(conn, "item", items)
    return recorded


async def save_consumer_state(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    consumer: str,
    *,
    status: str,
    breaker: str,
    failures: int,
    opened_at: datetime | None,
    last_error: str | None,
    dispatcher: str,
) -> None:
    params: dict[str, object] = {
        "consumer": consumer,
        "status": status,
        "breaker": breaker,
        "failures": failures,
        "opened_at": opened_at,
        "last_error": last_error,
        "dispatcher": dispatcher,
    }
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(q("save_consumer_state"), params)


@dataclass(frozen=True, slots=True)
class Waiting:
    consumer: str
    status: str  # disabled | unknown
    waiting: int
    oldest: datetime | None


async def census(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    *,
    active: Sequence[str],
    disabled: Sequence[str],
    dispatcher: str,
) -> list[Waiting]:
    params: dict[str, object] = {
        "active": list(active),
        "disabled": list(disabled),
        "dispatcher": dispatcher,
    }
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(q("census_waiting"), params)
        rows = await cur.fetchall()
    return [Waiting(row[0], row[1], row[2], row[3]) for row in rows]
