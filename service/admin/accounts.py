"""Admin accounts, as bin/admin manages them (and the tests make them)."""

from __future__ import annotations

from typing import Any, Literal

from psycopg import AsyncConnection

from service.admin.passwords import hash_password
from service.audit import record
from service.errors import unknown_name
from service.sql import q

Role = Literal["manager", "operator"]


class AccountError(ValueError):
    pass


async def _one(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> Any:
    cur = await conn.execute(q(name), params)
    return await cur.fetchone()


async def create_user(
    conn: AsyncConnection[Any], username: str, password: str, role: Role, *, actor: str
) -> int:
    """Make an account (in its own transaction, with its audit row); the id."""
    async with conn.transaction():
        if await _one(conn, "admin_find_user", {"username": username}):
            raise AccountError(f"an account named {username!r} exists")
        row = await _one(
            conn,
            "admin_create_user",
            {"username": username, "password_hash": hash_password(password), "role": role},
        )
        assert row is not None
        await record(conn, actor, "admin.create_user", username, after={"role": role})
        return int(row[0])


async def set_password(
    conn: AsyncConnection[Any], username: str, password: str, *, actor: str
) -> None:
    async with conn.transaction():
        changed = await _one(
            conn,
            "admin_set_password",
            {"username": username, "password_hash": hash_password(password)},
        )
        if changed is None:
            raise AccountError(f"no account named {username!r}")
        await record(conn, actor, "admin.set_password", username)


async def set_disabled(
    conn: AsyncConnection[Any], username: str, disabled: bool, *, actor: str
) -> None:
    async with conn.transaction():
        changed = await _one(
            conn, "admin_set_disabled", {"username": username, "disabled": disabled}
        )
        if changed is None:
            raise AccountError(f"no account named {username!r}")
        action = "admin.disable_user" if disabled else "admin.enable_user"
        await record(conn, actor, action, username, after={"disabled": disabled})


async def unlock(conn: AsyncConnection[Any], username: str, *, actor: str) -> bool:
    """End a username's sign-in lock and forget its failures, with the audit row; False if
    it had none (an account that is not locked). Failures are counted for any name, so
    any name with failures can be unlocked; a name that is neither an account nor has
    failures is an AccountError naming those that are (a typo, most likely)."""
    async with conn.transaction():
        row = await _one(conn, "admin_unlock", {"username": username})
        if row is None:
            if await _one(conn, "admin_find_user", {"username": username}):
                return False
            names = [r[0] for r in await list_users(conn)]
            cur = await conn.execute(q("admin_locked_usernames"))
            names += [r[0] for r in await cur.fetchall()]
            raise AccountError(unknown_name("account or locked username", username, names))
        before = {"failures": row[0], "locked_until": row[1]}
        await record(conn, actor, "admin.unlock", username, before=before)
        return True


async def list_users(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute(q("admin_list_users"))
    return await cur.fetchall()
