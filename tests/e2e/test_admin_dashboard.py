"""The admin dashboard in Chromium: traffic, deliveries, backlog and dead letters, and a
new seen mark arriving in the open page without a reload."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import expect

from tests.admin_browser import admin_site
from tests.notify_api import EPISODE, auth, new_key
from tests.support import bearer, client_token

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def seen(client: httpx.AsyncClient, user: str, tag: str, item: str) -> None:
    response = await client.post(
        "/v1/seen", json={"tag": tag, "id": item}, headers=bearer(client_token(user))
    )
    assert response.status_code == 200, response.text


async def attempts(db: Conn, consumer: str, outcomes: list[str], first_id: int) -> None:
    # Attempts of outbox rows that are not seeded: each takes the bucket of an ordering key 'k'.
    for n, outcome in enumerate(outcomes):
        await db.execute(
            "INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at,"
            " duration_ms, outcome, bucket)"
            " VALUES (%s, 1, %s, now() - interval '2 minutes', 12, %s, subject_bucket('k'))",
            [first_id + n, consumer, outcome],
        )


async def test_the_dashboard_shows_traffic_deliveries_backlog_and_dead_letters(
    db_url: str, db: Conn
) -> None:
    async with admin_site(db_url) as site:
        key = new_key(db_url, "studio")
        async with httpx.AsyncClient(base_url=site.base) as api:
            await seen(api, "u1", "promotions", "p1")
            await seen(api, "u2", "promotions", "p1")
            await seen(api, "u1", "cashback", "c1")
            put = await api.put(
                "/v1/users/u1", json={"email": "u1@test.example"}, headers=auth(key)
            )
            assert put.status_code in (200, 201), put.text
            event = await api.post(
                "/v1/events",
                json={
                    "type": "new_episode",
                    "idempotency_key": "dark-3",
                    "recipients": {"user_ids": ["u1"]},
                    "data": EPISODE,
                },
                headers=auth(key),
            )
            assert event.status_code == 202, event.text
        # What dispatchers would have recorded: attempts per consumer and channel, and a
        # mark's delivery that ran out of retries.
        await attempts(db, "email", ["delivered", "delivered", "delivered"], 1000)
        await attempts(db, "promotions", ["retry", "dead"], 2000)
        await db.execute(
            "UPDATE outbox SET status = 'dead' WHERE id = (SELECT min(id) FROM outbox"
            " WHERE consumer = 'promotions')"
        )

        page = await site.signed_in("manager")
        assert await page.locator("#stat-marks strong").inner_text() == "3"
        assert await page.locator("#stat-events strong").inner_text() == "1"
        assert await page.locator("#stat-deliveries strong").inner_text() == "5"
        assert await page.locator("#stat-dead strong").inner_text() == "1"
        # Backlog: the promotions marks still pending and the notification's rows
        # (email, inbox; push has no device: not queued).
        backlog = {
            (await row.locator("td").nth(0).inner_text()): [
                await row.locator("td").nth(i).inner_text() for i in (1, 2, 5, 6)
            ]
            for row in await page.locator("#backlog tbody tr").all()
        }
        assert backlog["promotions"] == ["consumer", "2", "0", "1"]
        assert backlog["email"][:2] == ["channel", "1"]
        svg_titles = await page.locator("svg.chart title").all_text_contents()
        assert "email (channel) · delivered: 3" in svg_titles
        assert "promotions (consumer) · retry: 1" in svg_titles
        assert "promotions (consumer) · dead: 1" in svg_titles
        assert "promotions (consumer) · pending: 2" in svg_titles
        assert any(
            t.startswith("Seen marks and events per minute") and "seen marks: 3, events: 1" in t
            for t in svg_titles
        ), svg_titles
        await site.check_page(page, "dashboard-live")

        # A mark arriving while the page is open shows up at the next refresh tick; the
        # page itself is not reloaded (a value planted in it survives).
        await page.evaluate("window.plantedBeforeRefresh = 42")
        async with httpx.AsyncClient(base_url=site.base) as api:
            await seen(api, "u3", "promotions", "p9")
        await expect(page.locator("#stat-marks strong")).to_have_text("4", timeout=15_000)
        assert await page.evaluate("window.plantedBeforeRefresh") == 42
        titles = await page.locator("svg.chart title").all_text_contents()
        assert any("seen marks: 4" in t for t in titles), titles

        # The fragment alone, as the refresh fetches it: no page around it.
        fragment = await page.request.get("/admin/dashboard/live")
        assert fragment.status == 200
        body = await fragment.text()
        assert "<html" not in body and 'id="stat-marks"' in body
    # Reading the dashboard is not an action: no audit rows beyond the sign-in.
    cur = await db.execute("SELECT action FROM audit_log WHERE actor = 'manager' ORDER BY id")
    assert [r[0] for r in await cur.fetchall()] == ["login"]
