"""Which buckets of each consumer this dispatcher claims: leased, renewed, rebalanced.

Rows carry their subject's bucket (sql/core/functions/subject_bucket.sql). A dispatcher
claims only the buckets it holds, so dispatchers side by side claim disjoint rows, and on
a Citus cluster each claim goes to the shards of its buckets. `lease_buckets()` does the
work in SQL: it renews this dispatcher's buckets, gives back what is above its fair share
and takes free or expired ones up to it. Renewed every third of the lease, so a dispatcher
that joins has its share within one renewal of the others, and one that dies loses its
buckets once the lease ends. The rows' own leases (claimed_until) still decide who may
deliver a row, so a bucket that moves mid-batch never makes a row go twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from service.sql import q

log = logging.getLogger(__name__)

# Renewals per lease: a renewal lost to a slow database still leaves two before it ends.
RENEWALS_PER_LEASE = 3


class BucketLeases:
    """This dispatcher's buckets of each consumer, kept renewed by `run()`."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        dispatcher: str,
        consumers: Sequence[str],
        lease_s: float,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.consumers = sorted(consumers)
        self.lease_s = lease_s
        self._held: dict[str, tuple[int, ...]] = {}
        # Which buckets one claim may name together (bucket_groups(): one shard's on a
        # Citus cluster, all of them on one server); read with the first renewal.
        self._groups: list[frozenset[int]] = []

    def buckets(self, consumer: str) -> tuple[int, ...]:
        return self._held.get(consumer, ())

    def groups(self, consumer: str) -> list[tuple[int, ...]]:
        """The buckets held of `consumer`, split into the groups a claim may name at once."""
        held = self._held.get(consumer, ())
        split = [tuple(b for b in held if b in group) for group in self._groups]
        return [g for g in split if g]

    async def renew(self) -> dict[str, tuple[int, ...]]:
        """Renew and rebalance once; returns the consumers whose buckets changed."""
        params: dict[str, object] = {
            "dispatcher": self.dispatcher,
            "consumers": self.consumers,
            "lease_s": self.lease_s,
        }
        async with self.pool.connection() as conn, conn.transaction():
            if not self._groups:
                cur = await conn.execute(q("bucket_groups"))
                self._groups = [frozenset(g) for (g,) in await cur.fetchall()]
            cur = await conn.execute(q("lease_buckets"), params)
            rows = await cur.fetchall()
        changed: dict[str, tuple[int, ...]] = {}
        for consumer, buckets in rows:
            held = tuple(buckets)
            if held != self._held.get(consumer):
                changed[consumer] = held
            self._held[consumer] = held
        return changed

    async def run(self, on_change: Callable[[Mapping[str, tuple[int, ...]]], None]) -> None:
        """Renew forever; `on_change` hears of every change (the loops claim at once)."""
        while True:
            await asyncio.sleep(self.lease_s / RENEWALS_PER_LEASE)
            try:
                changed = await self.renew()
            except (PoolTimeout, psycopg.Error) as exc:
                # The buckets held stay claimed until their lease ends; the rows' own
                # leases keep a second claimer off them in any case.
                log.warning("dispatcher %s: bucket lease renewal failed: %s", self.dispatcher, exc)
                continue
            if changed:
                log.info(
                    "dispatcher %s: buckets now %s",
                    self.dispatcher,
                    {c: len(b) for c, b in changed.items()},
                )
                on_change(changed)

    async def release(self) -> None:
        """Give every bucket back at once (a clean stop), so no one waits out the lease."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(q("release_buckets"), {"dispatcher": self.dispatcher})
        self._held.clear()
