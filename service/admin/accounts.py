"""Admin accounts, as bin/admin manages them (and the tests make them)."""

from __future__ import annotations

from typing import Any, Literal

from psycopg import Connection

from service.admin.passwords import hash_password
from service.errors import unknown_name
from service.ops.audit import record_sync
from service.sql import q

Role = Literal["manager", "operator"]


class AccountError(ValueError):
    pass


def create_user(
    conn: Connection[Any], username: str, password: str, role: Role, *, actor: str
) -> int:
    """Make an account (in its own transaction, with its audit row); the id."""
    with conn.transaction():
        if conn.execute(q("admin_find_user"), {"username": username}).fetchone():
            raise AccountError(f"an account named {username!r} exists")
        row = conn.execute(
            q("admin_create_user"),
            {"username": username, "password_hash": hash_password(password), "role": role},
        ).fetchone()
        assert row is not None
        record_sync(conn, actor, "admin.create_user", username, after={"role": role})
        return int(row[0])


def set_password(conn: Connection[Any], username: str, password: str, *, actor: str) -> None:
    with conn.transaction():
        changed = conn.execute(
            q("admin_set_password"),
            {"username": username, "password_hash": hash_password(password)},
        ).fetchone()
        if changed is None:
            raise AccountError(f"no account named {username!r}")
        record_sync(conn, actor, "admin.set_password", username)


def set_disabled(conn: Connection[Any], username: str, disabled: bool, *, actor: str) -> None:
    with conn.transaction():
        changed = conn.execute(
            q("admin_set_disabled"), {"username": username, "disabled": disabled}
        ).fetchone()
        if changed is None:
            raise AccountError(f"no account named {username!r}")
        action = "admin.disable_user" if disabled else "admin.enable_user"
        record_sync(conn, actor, action, username, after={"disabled": disabled})


def unlock(conn: Connection[Any], username: str, *, actor: str) -> bool:
    """End a username's sign-in lock and forget its failures, with the audit row; False if
    it had none (an account that is not locked). Failures are counted for any name, so
    any name with failures can be unlocked; a name that is neither an account nor has
    failures is an AccountError naming those that are (a typo, most likely)."""
    with conn.transaction():
        row = conn.execute(q("admin_unlock"), {"username": username}).fetchone()
        if row is None:
            if conn.execute(q("admin_find_user"), {"username": username}).fetchone():
                return False
            names = [r[0] for r in list_users(conn)]
            names += [r[0] for r in conn.execute(q("admin_locked_usernames")).fetchall()]
            raise AccountError(unknown_name("account or locked username", username, names))
        before = {"failures": row[0], "locked_until": row[1]}
        record_sync(conn, actor, "admin.unlock", username, before=before)
        return True


def list_users(conn: Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(q("admin_list_users")).fetchall()
