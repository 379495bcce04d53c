"""The audit log: one row per admin action or ops command, with the state before and after.

Both the admin panel and the CLIs (bin/redeliver, bin/admin, bin/apikey, bin/schedules;
actor `cli:<os user>`, service/ops/cli.py) write here, inside the transaction that makes
the change, so an action and its audit row land together or not at all.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection

from service.sql import q


async def record(
    conn: AsyncConnection[Any],
    actor: str,
    action: str,
    target: str | None = None,
    *,
    before: Any = None,
    after: Any = None,
    client_ip: str | None = None,
) -> None:
    def as_json(value: Any) -> str | None:
        return None if value is None else msgspec.json.encode(value).decode()

    params = {
        "actor": actor,
        "action": action,
        "target": target,
        "before": as_json(before),
        "after": as_json(after),
        "client_ip": client_ip,
    }
    await conn.execute(q("insert_audit"), params)
