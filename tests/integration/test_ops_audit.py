"""Every change an ops command makes writes its audit_log row, as the admin panel's
actions do: bin/schedules (add, set, enable, disable, remove, run, sync) and bin/apikey
(create, revoke), with the actor cli:<os user>. A refused command writes none."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.ops.apikeys_cli import main as apikey_main
from service.ops.cli import cli_actor
from service.schedule import schedules_cli
from service.schedule_store import PRODUCER
from tests.notify_api import Conn
from tests.schedules import add_users, make, newsletter, schedule_data, sync_types, write_config

pytestmark = pytest.mark.timeout(120)


async def audit_rows(db: Conn) -> list[tuple[Any, ...]]:
    cur = await db.execute("SELECT actor, action, target, before, after FROM audit_log ORDER BY id")
    return await cur.fetchall()


async def schedules(*argv: str) -> int:
    """bin/schedules in this process (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(schedules_cli.main, list(argv))


async def test_bin_schedules_audits_every_change(
    db_url: str, db: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = schedule_data(db_url)
    data["schedules"] = {"weekly-newsletter": newsletter(audience={"topic": "newsletter"})}
    await sync_types(db, make(data))
    await add_users(db, ["u1"], topic="newsletter")
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MARK_NOTIFY_CONFIG", str(write_config(tmp_path / "c.toml", data)))
    static = msgspec.json.encode({"title": "T", "intro": "I", "url": "https://x"}).decode()

    assert await schedules(
        "add", "nightly", "--cron", "30 2 * * *", "--event-type", "weekly_newsletter",
        "--topic", "newsletter", "--data", static,
    ) == 0  # fmt: skip
    assert await schedules(
        "set", "nightly", "--url", "http://127.0.0.1:9/x.json",
        "--header", "Authorization: Bearer secret-token",
    ) == 0  # fmt: skip
    assert await schedules("disable", "nightly") == 0
    assert await schedules("enable", "nightly") == 0
    assert await schedules("sync") == 0
    assert await schedules("run", "weekly-newsletter") == 0
    assert await schedules("remove", "nightly") == 0
    # Refused: nothing changed, so nothing is written.
    assert await schedules("remove", "nightly") == 1
    assert await schedules("disable", "weekly-newsletter") == 1
    assert await schedules("list") == 0

    rows = await audit_rows(db)
    assert [(r[1], r[2]) for r in rows] == [
        ("schedule.create", "nightly"),
        ("schedule.update", "nightly"),
        ("schedule.disable", "nightly"),
        ("schedule.enable", "nightly"),
        ("schedule.sync", None),
        ("schedule.run", "weekly-newsletter"),
        ("schedule.remove", "nightly"),
    ]
    assert {r[0] for r in rows} == {cli_actor()}
    created, updated, disabled, enabled, synced, ran, removed = rows
    assert created[4]["cron"] == "30 2 * * *" and created[4]["audience"] == {"topic": "newsletter"}
    assert updated[3]["source"]["kind"] == "static"
    # An HTTP source's headers are named, never their values.
    assert updated[4]["source"]["headers"] == {"Authorization": "(hidden)"}
    assert "secret-token" not in msgspec.json.encode(rows).decode()
    assert (disabled[3]["enabled"], disabled[4]) == (True, {"enabled": False, "next_run_at": None})
    assert enabled[4]["enabled"] is True and enabled[4]["next_run_at"]
    assert synced[4]["backend"] == "procrastinate"
    assert synced[4]["changes"] == [["weekly-newsletter", "added"]]
    cur = await db.execute("SELECT id::text FROM events WHERE producer = %s", [PRODUCER])
    event = await cur.fetchone()
    assert event is not None
    assert (ran[4]["outcome"], ran[4]["event_id"], ran[4]["attempts"]) == ("sent", event[0], 1)
    assert removed[3]["source"]["kind"] == "http" and removed[4] is None


async def test_bin_apikey_audits_create_and_revoke(
    db_url: str, db: Conn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    argv = ["create", "support", "--scope", "events:read", "--scope", "users:read", "--quiet"]
    assert await asyncio.to_thread(apikey_main, argv) == 0
    key = capsys.readouterr().out.strip()
    prefix = key[3:11]
    assert await asyncio.to_thread(apikey_main, ["revoke", prefix]) == 0
    # An unknown prefix changes nothing, and writes nothing.
    assert await asyncio.to_thread(apikey_main, ["revoke", "00000000"]) == 1
    assert await asyncio.to_thread(apikey_main, ["list"]) == 0

    rows = await audit_rows(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (cli_actor(), "apikey.create", prefix),
        (cli_actor(), "apikey.revoke", prefix),
    ]
    assert rows[0][4] == {"producer": "support", "scopes": ["events:read", "users:read"]}
    assert rows[1][4]["producer"] == "support" and rows[1][4]["revoked_at"]
    # The key is shown once, and never kept: not even in the audit log.
    assert key.split("_", 2)[2] not in msgspec.json.encode(rows).decode()
