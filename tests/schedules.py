"""Helpers of the scheduler's tests: a config with the weekly newsletter, connections as the
runner takes them, users in a topic, and a schedule made due."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg

from service.config.base import ROOT
from service.config.load import Config, parse_config
from service.notify.catalog import sync_catalog
from service.notify.templates import load_templates
from service.schedule.sources import Connect
from tests.consumers import scalar, to_toml
from tests.support import config_data

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
NEWSLETTER = {"title": "This week", "intro": "News and more news.", "url": "https://x/nl"}
# Fast enough for tests: a tick a second, short timeouts, retries 50 ms apart.
FAST_SCHEDULER: dict[str, Any] = {
    "backend": "procrastinate",
    "tick": "* * * * * *",
    "source_timeout": 1,
    "max_attempts": 3,
    "retry_backoff": {"initial": 0.05, "factor": 2.0, "cap": 0.2},
}


def schedule_data(db_url: str, **scheduler: Any) -> dict[str, Any]:
    """The test config (as TOML would give it) with the example's weekly newsletter type
    (its templates are config/templates/weekly_newsletter/) and a fast scheduler."""
    data = config_data(db_url)
    data["categories"]["newsletter"] = {"defaults": {"email": True, "inbox": True}}
    data["event_types"]["weekly_newsletter"] = {
        "category": "newsletter",
        "channels": ["email", "inbox"],
    }
    data["scheduler"] = FAST_SCHEDULER | scheduler
    data["dispatcher"] = {"sweep_interval": 0.5}
    return data


def api_config(data: dict[str, Any]) -> dict[str, Any]:
    """running_api's overrides for the API to run with this config's types and scheduler
    (its start-up mirrors its event types, disabling any it lacks)."""
    return {k: data[k] for k in ("scheduler", "categories", "event_types")}


def newsletter(**overrides: Any) -> dict[str, Any]:
    """A [schedules.<name>] entry: the newsletter, static data, to user u1 and u2."""
    return {
        "cron": "0 9 * * 1",
        "timezone": "Europe/Berlin",
        "event_type": "weekly_newsletter",
        "audience": {"user_ids": ["u1", "u2"]},
        "source": {"kind": "static", "data": NEWSLETTER},
    } | overrides


def make(data: dict[str, Any]) -> Config:
    return parse_config(data, "test-config")


async def sync_types(conn: Conn, config: Config) -> None:
    """Mirror the config's event types into the database, as a start-up does."""
    await sync_catalog(conn, config, load_templates(config))


def connector(url: str) -> Connect:
    """`connect` as the runner and the sources take it: a new autocommit connection."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            yield conn

    def make_one() -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return connect()

    return make_one


async def add_users(conn: Conn, ids: list[str], topic: str | None = None) -> None:
    for user in ids:
        await conn.execute(
            "INSERT INTO users (id, email) VALUES (%s, %s)", [user, f"{user}@test.example"]
        )
        if topic:
            await conn.execute(
                "INSERT INTO user_topics (topic, user_id) VALUES (%s, %s)", [topic, user]
            )


async def make_due(conn: Conn, name: str) -> Any:
    """Move a schedule's next time to a second ago (as if the clock had reached it); the
    new next_run_at."""
    return await scalar(
        conn,
        "UPDATE schedules SET next_run_at = date_trunc('second', now()) - interval '1 second'"
        " WHERE name = %s RETURNING next_run_at",
        [name],
    )


def bin_schedules(
    db_url: str, config_file: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": db_url, "MARK_NOTIFY_CONFIG": str(config_file)}
    return subprocess.run(
        [str(ROOT / "bin" / "schedules"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(to_toml(data))
    return path
