"""bin/admin: accounts made, changed and listed from a shell, each with its audit row."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
from typing import Any

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher

from service.admin import accounts_cli as cli
from service.config.base import ROOT
from tests.notify_api import running_api

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def admin(db_url: str, *argv: str, stdin: str = "") -> int:
    """bin/admin in this process (in a thread: it runs its own event loop)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        return await asyncio.to_thread(cli.main, ["--database-url", db_url, *argv])


async def test_accounts_from_the_shell(
    db_url: str, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "a-long-enough-password\n"
    assert (
        await admin(
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
        await admin(
            db_url, "create-user", "alice", "--role", "operator", "--password-stdin", stdin=password
        )
        == 2
    )
    assert (
        await admin(
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
    assert await admin(db_url, "disable", "alice") == 0
    cur = await db.execute("SELECT count(*) FROM admin_sessions")
    assert await cur.fetchone() == (0,)
    assert await admin(db_url, "enable", "alice") == 0
    assert (
        await admin(
            db_url, "set-password", "alice", "--password-stdin", stdin="another-long-password\n"
        )
        == 0
    )
    assert (
        await admin(
            db_url, "set-password", "nobody", "--password-stdin", stdin="another-long-password\n"
        )
        == 2
    )
    capsys.readouterr()
    assert await admin(db_url, "list") == 0
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


def bin_admin(db_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """bin/admin as a script or CI runs it: stdin not a terminal, and no terminal at all."""
    return subprocess.run(
        [str(ROOT / "bin" / "admin"), "--database-url", db_url, *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )


async def test_without_a_terminal_it_says_to_use_password_stdin(db_url: str, db: Conn) -> None:
    for argv in (("create-user", "alice", "--role", "manager"), ("set-password", "alice")):
        done = bin_admin(db_url, *argv)
        assert done.returncode == 2 and done.stdout == ""
        # One line, not getpass's EOFError traceback.
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("admin: no terminal to ask for the password on")
        assert f"e.g. bin/admin {' '.join(argv)} --password-stdin < password.txt" in done.stderr
    cur = await db.execute("SELECT count(*) FROM admin_users")
    assert await cur.fetchone() == (0,)


ADMIN = {
    "max_failures": 3,
    "lockout": 600,
    "failure_delay": 0.05,
    "max_delay": 0.2,
    # Plain HTTP in the test: a __Host- cookie would need HTTPS.
    "secure_cookies": False,
}
PASSWORD = "manager-password-1"


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    form = await client.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text[:300]
    return await client.post(
        "/admin/login", data={"username": username, "password": password, "csrf": csrf[1]}
    )


def lock_message(text: str) -> tuple[int, str]:
    """The minutes and the HH:MM the sign-in page says a lock lasts."""
    said = re.search(
        r"locked for the next (\d+) minutes, until (\d\d:\d\d) UTC\. Try again then, or have "
        r"it unlocked with bin/admin unlock\.",
        text,
    )
    assert said, text
    return int(said[1]), said[2]


async def test_a_lock_says_how_long_and_bin_admin_unlock_ends_it(db_url: str, db: Conn) -> None:
    assert await admin(
        db_url, "create-user", "manager", "--role", "manager", "--password-stdin", stdin=PASSWORD
    ) == 0  # fmt: skip
    async with running_api(db_url, admin=ADMIN) as client:
        answers = [await sign_in(client, "manager", f"guess-{n}") for n in range(3)]
        assert [r.status_code for r in answers] == [401, 401, 429]
        cur = await db.execute(
            "SELECT to_char(locked_until AT TIME ZONE 'UTC', 'HH24:MI')"
            " FROM admin_login_failures WHERE username = 'manager'"
        )
        until = await cur.fetchone()
        assert until is not None
        assert lock_message(answers[-1].text) == (10, until[0])
        # Refused while locked, even with the right password, saying the same.
        refused = await sign_in(client, "manager", PASSWORD)
        assert refused.status_code == 429
        assert lock_message(refused.text) == (10, until[0])
        for n in range(3):
            await sign_in(client, "nobody", f"guess-{n}")

        done = bin_admin(db_url, "unlock", "manager")
        assert done.returncode == 0, done.stderr
        assert "manager unlocked" in done.stdout
        signed_in = await sign_in(client, "manager", PASSWORD)
        assert signed_in.status_code == 303, signed_in.text

    # Nothing to unlock: said, and harmless; a name that is neither an account nor locked
    # (a typo) is an error naming those that are.
    done = bin_admin(db_url, "unlock", "manager")
    assert (done.returncode, done.stdout) == (0, "manager was not locked\n")
    done = bin_admin(db_url, "unlock", "manger")
    assert done.returncode == 2
    assert (
        done.stderr
        == "admin: no account or locked username named 'manger' (valid: manager, nobody)\n"
    )
    cur = await db.execute(
        "SELECT actor, before FROM audit_log WHERE action = 'admin.unlock' AND target = 'manager'"
    )
    ((actor, before),) = await cur.fetchall()
    assert actor.startswith("cli:") and before["failures"] == 3 and before["locked_until"]
