"""The audit log: one row per admin action or ops command, with the state before and after.

Both the admin panel and the CLIs (bin/redeliver, bin/admin) write here, inside the
transaction that makes the change, so an action and its audit row land together or not
at all.
"""

from __future__ import annotations

import getpass
from typing import Any

import msgspec
from psycopg import AsyncConnection, Connection

from service.sql import q


def cli_actor() -> str:
    """The actor of a command run from a shell: the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _params(
    actor: str,
    action: str,
    target: str | None,
    before: Any,
    after: Any,
    client_ip: str | None,
) -> dict[str, Any]:
    def as_json(value: Any) -> str | None:
        return None if value is None else msgspec.json.encode(value).decode()

    return {
        "actor": actor,
        "action": action,
        "target": target,
        "before": as_json(before),
        "after": as_json(after),
        "client_ip": client_ip,
    }


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
    await conn.execute(q("insert_audit"), _params(actor, action, target, before, after, client_ip))


def record_sync(
    conn: Connection[Any],
    actor: str,
    action: str,
    target: str | None = None,
    *,
    before: Any = None,
    after: Any = None,
    client_ip: str | None = None,
) -> None:
    conn.execute(q("insert_audit"), _params(actor, action, target, before, after, client_ip))
