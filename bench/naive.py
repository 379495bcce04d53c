"""The naive baseline the benchmarks compare against: one transaction per request and,
per mark, its own statements and its own Procrastinate job."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bench.sql import bq
from dispatcher import outbox
from dispatcher.transport_base import Transport
from service.app import create_app
from service.config.load import Config
from service.config.seen import Consumer
from service.seen.store import MarkKey, MarkRow, StorageUnavailable
from service.state import MarkWriter


class NaiveWriter:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def submit(self, rows: Sequence[MarkRow]) -> set[MarkKey]:
        new: set[MarkKey] = set()
        try:
            async with self._pool.connection() as conn, conn.transaction():
                for row in rows:
                    params = {
                        "tag": row.tag,
                        "item_id": row.item_id,
                        "subject_key": row.subject_key,
                        "subject_kind": row.subject_kind,
                        "subject": msgspec.json.encode(row.subject).decode(),
                        "remember_for_s": row.remember_for_s,
                        "consumer": row.consumer,
                    }
                    cur = await conn.execute(bq("naive_insert_mark"), params)
                    inserted = await cur.fetchone()
                    if inserted is None:
                        continue
                    params["outbox_id"] = inserted[0]
                    await conn.execute(bq("naive_insert_outbox"), params)
                    await conn.execute(bq("naive_defer_job"), params)
                    new.add(row.key)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StorageUnavailable(str(exc)) from exc
        return new

    async def close(self) -> None:
        return None


def naive_writer(pool: AsyncConnectionPool, config: Config) -> MarkWriter:
    return NaiveWriter(pool)


app = create_app(writer=naive_writer)


async def deliver_one_row(
    pool: AsyncConnectionPool,
    transport: Transport,
    name: str,
    consumer: Consumer,
    outbox_id: int,
) -> None:
    """The naive delivery baseline's unit of work, one Procrastinate job: claim this one row,
    send it, complete it (three round trips and a job for every row)."""
    batch = await outbox.claim_ids(pool, name, [outbox_id], lease_s=60, dispatcher="job")
    if not batch:
        return
    outcomes = await transport.deliver(name, batch)
    completions = [outbox.Completion(o, batch[0].attempt, 1.0) for o in outcomes]
    # Every bucket: the baseline claims by id, not by its buckets.
    await outbox.complete(pool, name, consumer, completions, dispatcher="job", buckets=None)
