"""One-click unsubscribe against the real API, database and (for the link) SMTP dispatch."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import psycopg

from service.app import create_app
from service.config.load import Config, parse_config
from service.notify.catalog import sync_catalog
from service.notify.templates import load_templates
from service.notify.unsubscribe import make_token, unsubscribe_url
from service.sql import q
from tests.consumers import running
from tests.smtp_server import smtp_server
from tests.support import config_data, notify_data, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def make_config(
    db_url: str, *, smtp_port: int = 9, public_url: str = "http://127.0.0.1:9"
) -> Config:
    data = config_data(db_url, **notify_data(smtp_port=smtp_port, public_url=public_url))
    # Email is the channel under test; SMS and push providers are not running.
    for name in ("sms", "push"):
        data["channels"][name]["enabled"] = False
    data["categories"]["content"]["description"] = "New episodes of <your> series"
    return parse_config(data, "test-config")


@asynccontextmanager
async def api(db: Conn, db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Config]]:
    config = make_config(db_url)
    await sync_catalog(db, config, load_templates(config))
    async with serve(create_app(config)) as base, httpx.AsyncClient(base_url=base) as http:
        yield http, config


async def add_user(db: Conn, user_id: str, email: str | None = None) -> None:
    email = email or f"{user_id}@x.test"
    await db.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user_id, email))


async def preferences(db: Conn) -> dict[str, tuple[bool, Any, Any]]:
    cur = await db.execute("SELECT user_id, muted, channels, quiet_hours FROM preferences")
    return {u: (m, c, qh) for u, m, c, qh in await cur.fetchall()}


async def accept(db: Conn, type_: str, user_ids: list[str]) -> str:
    cur = await db.execute(
        q("accept_event"),
        {
            "producer": "content",
            "idempotency_key": str(uuid.uuid4()),
            "type": type_,
            "recipients": json.dumps({"user_ids": user_ids}),
            "data": json.dumps(EPISODE),
            "send_at": None,
            "chunk": 1000,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


def path(config: Config, user_id: str, category: str, **kwargs: Any) -> str:
    return "/v1/unsubscribe/" + make_token(config.notify, user_id, category, **kwargs)


async def test_the_link_of_a_delivered_email_unsubscribes_with_one_post(
    db: Conn, db_url: str
) -> None:
    async with api(db, db_url) as (http, _), smtp_server() as server:
        config = make_config(db_url, smtp_port=server.port, public_url=str(http.base_url))
        await add_user(db, "anna")
        await add_user(db, "ben")
        # Anna's other choices, which the unsubscribe must keep.
        kept_channels = {"content": {"push": False, "inbox": True}, "social": {"email": True}}
        quiet = {"push": {"start": "22:00", "end": "07:00"}}
        await db.execute(
            "INSERT INTO preferences (user_id, channels, quiet_hours) VALUES ('anna', %s, %s)",
            (json.dumps(kept_channels), json.dumps(quiet)),
        )
        await accept(db, "new_episode", ["anna", "ben"])
        async with running(config, db_url):
            mails = await server.wait_for(2)
        [anna_mail] = [m for m in mails if m.rcpt_tos == ["anna@x.test"]]
        link = anna_mail.message["List-Unsubscribe"]
        assert link.startswith(f"<{str(http.base_url).rstrip('/')}/v1/unsubscribe/")
        # The mail client's RFC 8058 request: a form POST of this exact body, no cookies.
        answer = await http.post(link[1:-1], headers=FORM, content=ONE_CLICK)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "You are unsubscribed" in answer.text
        assert "New episodes of &lt;your&gt; series" in answer.text
        assert await preferences(db) == {
            "anna": (
                False,
                {
                    "content": {"push": False, "inbox": True, "email": False},
                    "social": {"email": True},
                },
                quiet,
            )
        }
        # Clicking again changes nothing and says the same.
        cur = await db.execute("SELECT updated_at FROM preferences WHERE user_id = 'anna'")
        before = await cur.fetchone()
        again = await http.post(link[1:-1], headers={"Accept": "application/json"})
        assert (again.status_code, again.json()) == (
            200,
            {"status": "unsubscribed", "category": "content", "channel": "email"},
        )
        cur = await db.execute("SELECT updated_at FROM preferences WHERE user_id = 'anna'")
        assert await cur.fetchone() == before

    # The next episode reaches Anna everywhere but by email; Ben still gets email.
    event_id = await accept(db, "new_episode", ["anna", "ben"])
    cur = await db.execute(
        "SELECT n.user_id, n.suppressed, array_agg(o.consumer ORDER BY o.consumer)"
        " FROM notifications n LEFT JOIN outbox o ON o.notification_id = n.id"
        " WHERE n.event_id = %s GROUP BY n.user_id, n.suppressed ORDER BY n.user_id",
        (event_id,),
    )
    assert await cur.fetchall() == [
        ("anna", {"email": "preference"}, ["inbox"]),
        ("ben", None, ["email", "inbox"]),
    ]


async def test_get_shows_a_button_and_unsubscribes_nobody(db: Conn, db_url: str) -> None:
    async with api(db, db_url) as (http, config):
        await add_user(db, "anna")
        url = path(config, "anna", "content")
        page = await http.get(url)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert '<form method="post">' in page.text
        assert '<button type="submit">Unsubscribe</button>' in page.text
        assert "New episodes of &lt;your&gt; series" in page.text
        assert await preferences(db) == {}
        # The button: the browser posts the form back to the page's own URL.
        clicked = await http.post(url, data={"List-Unsubscribe": "One-Click"})
        assert clicked.status_code == 200
        assert await preferences(db) == {"anna": (False, {"content": {"email": False}}, {})}


async def test_altered_expired_or_stale_links_are_refused_and_write_nothing(
    db: Conn, db_url: str
) -> None:
    async with api(db, db_url) as (http, config):
        await add_user(db, "anna")
        good = make_token(config.notify, "anna", "content")
        other = make_token(config.notify, "ben", "content")
        ttl = config.notify.unsubscribe_ttl + timedelta(minutes=1)
        refused = {
            "another user's claims": good.split(".")[0]
            + "."
            + other.split(".")[1]
            + "."
            + good.split(".")[2],
            "expired": make_token(
                config.notify, "anna", "content", now=time.time() - ttl.total_seconds()
            ),
            "not a token": "hello",
            "a category that is gone": make_token(config.notify, "anna", "promotions"),
            "a channel that is not email": make_token(
                config.notify, "anna", "content", channel="push"
            ),
        }
        for what, token in refused.items():
            for method in ("GET", "POST"):
                answer = await http.request(method, f"/v1/unsubscribe/{token}", content=ONE_CLICK)
                assert answer.status_code == 400, what
                assert answer.json()["code"] == "invalid_unsubscribe_link", what
        assert "expired" in (await http.post(f"/v1/unsubscribe/{refused['expired']}")).text
        assert await preferences(db) == {}


async def test_transactional_email_cannot_be_unsubscribed(db: Conn, db_url: str) -> None:
    async with api(db, db_url) as (http, config):
        await add_user(db, "anna")
        answer = await http.post(path(config, "anna", "account"), content=ONE_CLICK)
        assert answer.status_code == 400
        assert answer.json()["code"] == "transactional_category"
        assert (await http.get(path(config, "anna", "billing"))).status_code == 400
        assert await preferences(db) == {}


async def test_a_user_that_is_gone_gets_a_200_that_changes_nothing(db: Conn, db_url: str) -> None:
    async with api(db, db_url) as (http, config):
        url = unsubscribe_url(config.notify, "ghost", "content").removeprefix(
            config.notify.public_url
        )
        answer = await http.post(url, headers={"Accept": "application/json"})
        assert (answer.status_code, answer.json()) == (
            200,
            {"status": "unknown_user", "category": "content", "channel": "email"},
        )
        page = await http.post(url)
        assert (page.status_code, "Nothing to unsubscribe" in page.text) == (200, True)
        cur = await db.execute("SELECT count(*) FROM preferences")
        assert await cur.fetchone() == (0,)
