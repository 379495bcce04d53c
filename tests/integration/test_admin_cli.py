"""bin/admin: accounts made, changed and listed from a shell, each with its audit row."""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher

from service.admin import cli

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def admin(db_url: str, *argv: str, stdin: str = "") -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        return cli.main(["--database-url", db_url, *argv])


async def test_accounts_from_the_shell(
    db_url: str, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "a-long-enough-password\n"
    assert (
        admin(
            db_url, "create-user", "alice", "--role", "manager", "--password-stdin", stdin=password
        )
        == 0
    )
    cur = await db.execute("SELECT role, password_hash FROM admin_users WHERE username = 'alice'")
    row = await cur.fetchone()
    assert row is not None and row[0] == "manager"
    # Stored as an argon2id hash of the password, never the password.
    assert row[1].startswith("$argon2id$") and "a-long-enough-password" not in row[1]
    assert PasswordHasher().verify(row[1], "a-long-enough-password")

    # A second account of the same name, and a short password, are refused.
    assert (
        admin(
            db_url, "create-user", "alice", "--role", "operator", "--password-stdin", stdin=password
        )
        == 2
    )
    assert (
        admin(
            db_url, "create-user", "bob", "--role", "operator", "--password-stdin", stdin="short\n"
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "an account named 'alice' exists" in err and "at least 12 characters" in err

    # Disabling ends the account's sessions at once.
    await db.execute(
        "INSERT INTO admin_sessions (token_hash, user_id, csrf_token, expires_at)"
        " SELECT '\\x01', id, 'c', now() + interval '1 hour' FROM admin_users"
        " WHERE username = 'alice'"
    )
    assert admin(db_url, "disable", "alice") == 0
    cur = await db.execute("SELECT count(*) FROM admin_sessions")
    assert await cur.fetchone() == (0,)
    assert admin(db_url, "enable", "alice") == 0
    assert (
        admin(db_url, "set-password", "alice", "--password-stdin", stdin="another-long-password\n")
        == 0
    )
    assert (
        admin(db_url, "set-password", "nobody", "--password-stdin", stdin="another-long-password\n")
        == 2
    )
    capsys.readouterr()
    assert admin(db_url, "list") == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "manager" in listing and "bob" not in listing

    cur = await db.execute("SELECT actor, action, target, after FROM audit_log ORDER BY id")
    rows = await cur.fetchall()
    assert [(r[1], r[2]) for r in rows] == [
        ("admin.create_user", "alice"),
        ("admin.disable_user", "alice"),
        ("admin.enable_user", "alice"),
        ("admin.set_password", "alice"),
    ]
    assert all(r[0].startswith("cli:") for r in rows)
    assert rows[0][3] == {"role": "manager"}
