"""Retention: finished rows are pruned once past their age ([retention], RetentionSettings).

First whole days go: the day partitions of outbox and delivery_attempts whose rows are all
past their age and none pending (sql/retention/functions/drop_retained_partitions.sql),
after the days ahead are made (maintain_partitions()). Then row by row, what is left
(sql/retention/functions/prune_retention_batch.sql):
delivered and suppressed outbox rows after `delivered` (inbox channels' after `inbox`), dead
letters (status `failed` or `dead`) after `dead`, each with its attempts; attempts of rows
that stay after `attempts`; flushed digest items after `digest_items`. Pending rows and their
attempts are never touched.

`prune` loops bounded batches, each its own transaction on an autocommit connection, so a
backlog of millions of rows never holds a lock or a snapshot for long and never waits for
a dispatcher (rows are taken with SKIP LOCKED). pg_cron runs the same loop in the
database: `CALL prune_retention(...)` (the `call_prune_retention` query).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg

from service.config.schedule import RetentionSettings
from service.sql import q

KINDS = ("delivered", "dead", "attempts", "digest_items")


def params(
    settings: RetentionSettings,
    reached: Mapping[str, datetime | None] | None = None,
    buckets: list[int] | None = None,
) -> dict[str, Any]:
    """The parameters of the retention queries for these settings; `reached`: where each
    kind's previous batch got to (none: start from the oldest); `buckets`: the group of
    buckets a batch prunes (none: every bucket)."""
    return {
        "delivered": settings.delivered,
        "inbox": settings.inbox,
        "dead": settings.dead,
        "attempts": settings.attempts,
        "digest_items": settings.digest_items,
        "inbox_changes": settings.inbox_changes,
        "batch_size": settings.batch_size,
        "pause": settings.pause,
        "buckets": buckets,
    } | {f"{kind}_from": (reached or {}).get(kind) for kind in KINDS}


async def prune(conn: psycopg.AsyncConnection[Any], settings: RetentionSettings) -> dict[str, int]:
    """Prune everything past its age, a batch at a time until no kind fills its batch.

    Returns the rows pruned per kind (KINDS), how many batches it took ("batches") and
    the day partitions dropped whole ("days").
    The connection must be in autocommit mode: each batch then commits on its own.
    """
    if not conn.autocommit:
        # In one transaction the whole prune would hold its locks to the end.
        raise ValueError("prune needs an autocommit connection (each batch commits alone)")
    await conn.execute(q("maintain_partitions"))
    totals = dict.fromkeys(KINDS, 0) | {"batches": 0, "days": 0}
    # A day detached per statement (each its own transaction: the parent is locked until
    # commit), then dropped by the next, without that lock.
    while True:
        await conn.execute(q("drop_detached_partitions"))
        cur = await conn.execute(q("drop_retained_partitions"), params(settings))
        if not await cur.fetchall():
            break
        totals["days"] += 1
    # Group by group of buckets: one on one server; on Citus one per shard, so that each
    # batch is routed to one shard (row locks with SKIP LOCKED are refused across shards).
    cur = await conn.execute(q("bucket_groups"))
    groups = [list(row[0]) for row in await cur.fetchall()]
    pause = settings.pause.total_seconds()
    for buckets in groups:
        # Where each kind got to: the next batch starts there rather than stepping again
        # over the index entries of the rows pruned so far.
        reached: dict[str, datetime | None] = dict.fromkeys(KINDS)
        while True:
            cur = await conn.execute(q("prune_retention_batch"), params(settings, reached, buckets))
            more = False
            for kind, pruned, full_batch, at in await cur.fetchall():
                totals[kind] += int(pruned)
                reached[kind] = at
                more = more or bool(full_batch)
            totals["batches"] += 1
            if not more:
                break
            if pause > 0:
                await asyncio.sleep(pause)
    # The live inbox's change log: no buckets (a local table, on Citus too).
    totals["inbox_changes"] = 0
    while True:
        cur = await conn.execute(q("prune_inbox_changes"), params(settings))
        row = await cur.fetchone()
        pruned = int(row[0]) if row else 0
        totals["inbox_changes"] += pruned
        if pruned < settings.batch_size:
            break
        if pause > 0:
            await asyncio.sleep(pause)
    return totals
