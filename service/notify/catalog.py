"""The notification configuration as the database sees it.

The fan-out runs in SQL (notify_event(), notify_materialize(), flush_digests()), so what
it needs of the configuration (channel kinds, category defaults, each type's channels,
priority, ttl, escalation, the data its templates need, a digest-mode type's policy) is
mirrored into the notify_* tables at start-up by sync_notify_config(); the API and the
dispatcher both do it, and it is a no-op when nothing changed. The API starts even with
the database down: it then keeps trying in the background, and POST /v1/events answers
503 until it has succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import msgspec
import psycopg
from psycopg_pool import PoolTimeout

from service.config.load import Config
from service.config.notify import DigestPolicy
from service.sql import q
from service.state import EventTemplates, State

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


def catalog_params(config: Config, templates: Mapping[str, EventTemplates]) -> dict[str, str]:
    channels = {name: {"kind": c.kind} for name, c in config.channels.items() if c.enabled}
    categories = config.category_rules()
    event_types: dict[str, Any] = {}
    for name, t in config.event_types.items():
        escalation = t.escalation
        event_types[name] = {
            "category": t.category,
            "channels": t.channels,
            "priority": t.priority,
            "ttl_s": t.ttl.total_seconds(),
            "escalation_channel": escalation.channel if escalation else None,
            "escalation_after_s": escalation.after.total_seconds() if escalation else None,
            "required_data": sorted(templates[name].required_data),
            "mode": t.mode,
        } | _digest_params(t.digest)
    return {
        "channels": _encode(channels).decode(),
        "categories": _encode(categories).decode(),
        "event_types": _encode(event_types).decode(),
    }


def _digest_params(digest: DigestPolicy | None) -> dict[str, Any]:
    """A digest-mode type's policy as notify_event_types' digest_* columns."""
    if digest is None:
        return {}

    def seconds(value: timedelta | None) -> float | None:
        return value.total_seconds() if value is not None else None

    return {
        "digest_key": digest.key,
        "digest_actor": digest.actor,
        "digest_window": digest.window,
        "digest_every_s": seconds(digest.every),
        "digest_at": digest.at,
        "digest_quiet_s": seconds(digest.quiet),
        "digest_max_wait_s": seconds(digest.max_wait),
        "digest_max_items": digest.max_items,
        "digest_show_actors": digest.show_actors,
    }


async def sync_catalog(
    conn: psycopg.AsyncConnection[Any],
    config: Config,
    templates: Mapping[str, EventTemplates],
) -> None:
    await conn.execute(q("sync_notify_config"), catalog_params(config, templates))


async def sync_catalog_soon(state: State) -> None:
    """Mirror the API's event types into the database now, or, if it is down, in the
    background as soon as it is back; `state.catalog_synced` tells when it is done."""
    if not state.config.event_types:
        # Nothing to mirror, and nothing to wait for: every event type is unknown anyway.
        return
    try:
        async with state.pool.connection(
            timeout=state.config.database.connect_timeout.total_seconds()
        ) as conn:
            await sync_catalog(conn, state.config, state.templates)
    except (PoolTimeout, psycopg.Error) as exc:
        log.warning("could not sync the notification catalog yet (%s); retrying", exc)
        state.in_background(_sync_catalog_later(state))
        return
    state.catalog_synced = True


async def _sync_catalog_later(state: State) -> None:
    while True:
        await asyncio.sleep(state.config.api.retry_after_s)
        try:
            async with state.pool.connection() as conn:
                await sync_catalog(conn, state.config, state.templates)
        except (PoolTimeout, psycopg.Error):
            continue
        state.catalog_synced = True
        log.info("notification catalog synced")
        return
