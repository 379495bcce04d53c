"""Helpers of the notification API tests: a running API, producer keys, table counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg

from service.apikeys import SCOPES, create_key
from service.app import create_app
from service.errors import ERROR_CODES, NAME_CODES
from tests.support import make_config, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
# A producer's key: every scope but events:read, which reads other producers' events.
ALL_SCOPES = tuple(s for s in SCOPES if s != "events:read")
TABLES = (
    "events",
    "notifications",
    "outbox",
    "users",
    "push_devices",
    "user_topics",
    "preferences",
    "procrastinate_jobs",
)
EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
RECEIPT = {"amount": "9.99", "currency": "EUR", "order_id": "o-1", "paid_at": "today"}


@asynccontextmanager
async def running_api(db_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(create_app(make_config(db_url, **overrides))) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        yield client


def new_key(db_url: str, producer: str = "billing", scopes: tuple[str, ...] = ALL_SCOPES) -> str:
    """A new key, made in a thread of its own: callable from sync fixtures and from tests
    that run in an event loop alike."""

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return (await create_key(conn, producer, scopes, actor="test")).key

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, make()).result()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def counts(db: Conn) -> dict[str, int]:
    """Rows per table the notification API writes."""
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM notifications),"
        " (SELECT count(*) FROM outbox), (SELECT count(*) FROM users),"
        " (SELECT count(*) FROM push_devices), (SELECT count(*) FROM user_topics),"
        " (SELECT count(*) FROM preferences), (SELECT count(*) FROM procrastinate_jobs)"
    )
    row = await cur.fetchone()
    assert row is not None
    return dict(zip(TABLES, (int(n) for n in row), strict=True))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A JSON error with the documented status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    # `allowed` (the configured names) comes only with an unknown name's code.
    assert set(body) - {"allowed"} == {"code", "message"}, body
    assert ("allowed" in body) <= (code in NAME_CODES), body
    assert body["code"] == code, body
    assert ERROR_CODES[code][0] == status
    assert body["message"]
    return body
