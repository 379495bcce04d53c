"""The live inbox bench's database (bench/inbox_stream.py): its config, the seeded
template, and the dispatcher's own calls that deliver to the inbox.

Every row the bench delivers, seeded or timed, goes through dispatcher/outbox.py (claim_ids,
then complete, which writes the change log and the NOTIFY in the delivering transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.harness import JWT_SECRET, fresh_database
from bench.sql import bq
from dispatcher.inbox_transport import InboxTransport
from dispatcher.outbox import Completion, claim_ids, complete
from dispatcher.transport_base import Delivery
from service.config.load import Config
from service.config.notify import Channel
from service.database import CONNECTION_OPTIONS
from service.notify.catalog import catalog_params
from service.notify.fanout import materialize_parallel
from service.notify.templates import load_templates
from service.sql import q

CHANNEL = "inbox"
DISPATCHER = "bench-inbox-stream"
EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/3"}
SEED_BATCH = 500


def config_text(pool_max: int) -> str:
    return f"""
environment = "test"
[database]
pool_max = {pool_max}
[identity.jwt]
secret = "{JWT_SECRET}"
audience = "mark-notify"
issuer = "bench"
[tags.notifications]
event_type = "client"
remember_for = "P365D"
[notify]
seen_tag = "notifications"
unsubscribe_secret = "bench-unsubscribe-secret-0123456789abcdef"
[channels.{CHANNEL}]
kind = "inbox"
transport = "inbox"
[categories.content]
defaults = {{ inbox = true }}
[event_types.new_episode]
category = "content"
channels = ["{CHANNEL}"]
"""


# --- the dispatcher's calls ----------------------------------------------------------------


def writer_pool(url: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        url, min_size=1, max_size=2, kwargs={"options": CONNECTION_OPTIONS}, open=False
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed inbox row, and the (user id, notification id) its change names."""

    delivery: Delivery
    item: tuple[str, str]


async def claim(pool: AsyncConnectionPool, ids: Sequence[int]) -> dict[int, Claimed]:
    claimed = await claim_ids(pool, CHANNEL, list(ids), lease_s=3600.0, dispatcher=DISPATCHER)
    if len(claimed) != len(ids):
        raise SystemExit(f"claimed {len(claimed)} of {len(ids)} inbox rows")
    async with pool.connection() as conn:
        cur = await conn.execute(bq("stream_inbox_items"), {"ids": list(ids)})
        items = {int(r[0]): (str(r[1]), str(r[2])) for r in await cur.fetchall()}
    return {d.outbox_id: Claimed(d, items[d.outbox_id]) for d in claimed}


async def deliver(pool: AsyncConnectionPool, channel: Channel, batch: list[Claimed]) -> float:
    """The inbox transport and the completion of `batch`, as the dispatcher's loop does;
    the time just after its COMMIT returned."""
    deliveries = [c.delivery for c in batch]
    outcomes = {o.outbox_id: o for o in await InboxTransport().deliver(CHANNEL, deliveries)}
    completions = [
        Completion(outcomes[c.delivery.outbox_id], c.delivery.attempt, inbox_item=c.item)
        for c in batch
    ]
    recorded = await complete(
        pool, CHANNEL, channel, completions, dispatcher=DISPATCHER, buckets=None
    )
    committed = time.time()
    if sum(r.applied and r.outcome == "delivered" for r in recorded) != len(batch):
        raise SystemExit(f"a batch of {len(batch)} was not all recorded delivered: {recorded}")
    return committed


async def pending(url: str) -> list[tuple[int, str, str]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(bq("stream_pending_inbox"), {"channel": CHANNEL})
        return [(int(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]


# --- the template ----------------------------------------------------------------------


def seed_template(server: str, config: Config, args: argparse.Namespace) -> str:
    url = fresh_database(server, "inbox_tpl")
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(q("sync_notify_config"), catalog_params(config, load_templates(config)))
        conn.execute(bq("stream_seed_users"), {"users": args.streams})
        events = [_accept_event(conn) for _ in range(args.items + changes_events(args))]
    asyncio.run(_seed(url, config, events, args.items))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(
        f"seeded {args.streams:,} users with {args.items} items each and "
        f"{changes_events(args)} pending per user in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return url


def changes_events(args: argparse.Namespace) -> int:
    """Pending deliveries per user: enough for a run's steady changes, one for the burst
    and, with --reconnect, one for the changes made while the listeners are away."""
    steady = math.ceil(float(args.rate) * float(args.duration))
    return math.ceil(steady / int(args.streams)) + 1 + int(bool(args.reconnect))


Rows = list[tuple[int, str]]


def changes(
    rows: list[tuple[int, str, str]], args: argparse.Namespace, rng: random.Random
) -> tuple[Rows, Rows, Rows]:
    """(outbox id, notification id) of the steady changes, of the burst and of the
    reconnect. One pending event each user gets after another, users in a random order in
    each; the burst and the reconnect have an event of their own, so that their users are
    all different."""
    events: dict[str, Rows] = {}
    for outbox_id, notification_id, event_id in rows:
        events.setdefault(event_id, []).append((outbox_id, notification_id))
    rounds = sorted(events.values(), key=lambda r: min(r))
    for r in rounds:
        rng.shuffle(r)
    again: Rows = rounds.pop()[: args.reconnect] if args.reconnect else []
    steady = [row for r in rounds[:-1] for row in r]
    return steady[: math.ceil(args.rate * args.duration)], rounds[-1][: args.burst], again


def _accept_event(conn: psycopg.Connection[Any]) -> str:
    params = {
        "producer": "bench",
        "idempotency_key": uuid.uuid4().hex,
        "type": "new_episode",
        "recipients": json.dumps({"all": True}),
        "data": json.dumps(EPISODE),
        "send_at": None,
        "chunk": 50_000,
    }
    row = conn.execute(q("accept_event"), params).fetchone()
    assert row is not None
    return str(row[0])


async def _seed(url: str, config: Config, events: list[str], items: int) -> None:
    for event_id in events:
        _, done = await materialize_parallel(url, event_id, 50_000)
        assert done, event_id
    seeded = set(events[:items])
    ids = [outbox for outbox, _, event in await pending(url) if event in seeded]
    async with writer_pool(url) as pool:
        for start in range(0, len(ids), SEED_BATCH):
            batch = await claim(pool, ids[start : start + SEED_BATCH])
            await deliver(pool, config_channel(config), list(batch.values()))


def config_channel(config: Config) -> Channel:
    channel = config.channels[CHANNEL]
    assert isinstance(channel, Channel)
    return channel
