"""Operators' switches: pause a consumer (or channel), switch an SMS or push provider off.

A paused consumer's rows stay pending: the dispatchers' claims skip them
(sql/core/queries/dispatch.sql) until it is resumed, and a resume wakes the dispatchers so the
backlog goes at once rather than at the next sweep. A provider switched off is skipped in
its channel's failover order; the claim hands the transport the names of those switched
off, so a switch counts from the next batch. Batches already claimed finish either way.

Each change is one transaction with its audit_log row (before and after), for the admin
panel (async connections); the state lives in consumer_controls and provider_controls.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from service import audit
from service.sql import q
from service.wake import WAKE_QUEUE, WAKE_TASK


class ConsumerControl(msgspec.Struct, frozen=True, kw_only=True):
    consumer: str
    paused: bool
    reason: str | None
    changed_by: str
    updated_at: datetime


class ProviderControl(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    provider: str
    enabled: bool
    changed_by: str
    updated_at: datetime


def _consumer_state(paused: bool, reason: str | None) -> dict[str, object]:
    return {"paused": paused, "reason": reason}


async def _set_paused(
    conn: AsyncConnection[Any],
    consumer: str,
    paused: bool,
    actor: str,
    reason: str | None,
    client_ip: str | None,
) -> ConsumerControl:
    if not consumer:
        raise ValueError("consumer: a name is needed")
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(q("lock_consumer_control"), {"consumer": consumer})
        old = await cur.fetchone()
        await cur.execute(
            q("set_consumer_control"),
            {"consumer": consumer, "paused": paused, "actor": actor, "reason": reason},
        )
        row = await cur.fetchone()
        assert row is not None
        now = ConsumerControl(
            consumer=row[0], paused=row[1], reason=row[2], changed_by=row[3], updated_at=row[4]
        )
        if not paused:
            # Its rows are due already: claim them now, not at the next sweep.
            await cur.execute(
                q("wake_consumers"),
                {"consumers": [consumer], "wake_queue": WAKE_QUEUE, "wake_task": WAKE_TASK},
            )
        await audit.record(
            conn,
            actor,
            "consumer.pause" if paused else "consumer.resume",
            consumer,
            # No row: never paused.
            before=_consumer_state(old[0], old[1]) if old else _consumer_state(False, None),
            after=_consumer_state(now.paused, now.reason),
            client_ip=client_ip,
        )
    return now


async def pause(
    conn: AsyncConnection[Any],
    consumer: str,
    actor: str,
    reason: str | None = None,
    *,
    client_ip: str | None = None,
) -> ConsumerControl:
    """Stop the dispatchers claiming this consumer's (or channel's) rows; they stay
    pending, and nothing is lost or counted as an attempt."""
    return await _set_paused(conn, consumer, True, actor, reason, client_ip)


async def resume(
    conn: AsyncConnection[Any],
    consumer: str,
    actor: str,
    reason: str | None = None,
    *,
    client_ip: str | None = None,
) -> ConsumerControl:
    """Let the dispatchers claim this consumer's rows again, and wake them."""
    return await _set_paused(conn, consumer, False, actor, reason, client_ip)


async def set_provider(
    conn: AsyncConnection[Any],
    channel: str,
    provider: str,
    enabled: bool,
    actor: str,
    *,
    client_ip: str | None = None,
) -> ProviderControl:
    """Switch one provider of an SMS or push channel on or off. With every provider of a
    channel off, its messages fail as in an outage (retried, then dead): pause the channel
    instead to hold them."""
    if not channel or not provider:
        raise ValueError("channel and provider: names are needed")
    params = {"channel": channel, "provider": provider}
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(q("lock_provider_control"), params)
        old = await cur.fetchone()
        await cur.execute(q("set_provider_control"), params | {"enabled": enabled, "actor": actor})
        row = await cur.fetchone()
        assert row is not None
        now = ProviderControl(
            channel=row[0], provider=row[1], enabled=row[2], changed_by=row[3], updated_at=row[4]
        )
        await audit.record(
            conn,
            actor,
            "provider.enable" if enabled else "provider.disable",
            f"{channel}/{provider}",
            # No row: enabled.
            before={"enabled": old[0] if old else True},
            after={"enabled": now.enabled},
            client_ip=client_ip,
        )
    return now


async def consumer_controls(conn: AsyncConnection[Any]) -> dict[str, ConsumerControl]:
    """Every consumer an operator paused or resumed, by name (absent: never paused)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(q("list_consumer_controls"))
        return {
            r[0]: ConsumerControl(
                consumer=r[0], paused=r[1], reason=r[2], changed_by=r[3], updated_at=r[4]
            )
            for r in await cur.fetchall()
        }


async def paused_consumers(conn: AsyncConnection[Any]) -> set[str]:
    return {name for name, c in (await consumer_controls(conn)).items() if c.paused}


async def provider_controls(
    conn: AsyncConnection[Any],
) -> dict[tuple[str, str], ProviderControl]:
    """Every provider switch an operator set, by (channel, provider) (absent: enabled)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(q("list_provider_controls"))
        return {
            (r[0], r[1]): ProviderControl(
                channel=r[0], provider=r[1], enabled=r[2], changed_by=r[3], updated_at=r[4]
            )
            for r in await cur.fetchall()
        }


async def disabled_providers(conn: AsyncConnection[Any]) -> set[tuple[str, str]]:
    return {key for key, c in (await provider_controls(conn)).items() if not c.enabled}
