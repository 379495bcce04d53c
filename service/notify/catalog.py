"""The notification configuration as the database sees it.

The fan-out runs in SQL (notify_event(), notify_materialize()), so what it needs of the
configuration (channel kinds, category defaults, each type's channels, priority, ttl,
escalation and the data its templates need) is mirrored into the notify_* tables at
start-up by sync_notify_config(); the API and the dispatcher both do it, and it is a no-op
when nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg

from service.config import Config
from service.notify.templates import TypeTemplates
from service.sql import q

_encode = msgspec.json.Encoder().encode


def catalog_params(config: Config, templates: Mapping[str, TypeTemplates]) -> dict[str, str]:
    channels = {name: {"kind": c.kind} for name, c in config.channels.items() if c.enabled}
    categories = {
        name: {"transactional": c.transactional, "defaults": c.defaults}
        for name, c in config.categories.items()
    }
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
        }
    return {
        "channels": _encode(channels).decode(),
        "categories": _encode(categories).decode(),
        "event_types": _encode(event_types).decode(),
    }


async def sync_catalog(
    conn: psycopg.AsyncConnection[Any],
    config: Config,
    templates: Mapping[str, TypeTemplates],
) -> None:
    await conn.execute(q("sync_notify_config"), catalog_params(config, templates))
