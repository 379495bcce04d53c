"""Looking a user up in the admin, in Chromium: contacts, preferences, topics, inbox,
notifications and seen marks; an unknown id says so."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import Page

from tests.admin_browser import admin_site
from tests.consumers import scalar
from tests.notify_api import EPISODE, auth, new_key
from tests.support import bearer, client_token

# On the Citus cluster too (`pytest --citus`).
pytestmark = pytest.mark.citus

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
DEVICE = "device-token-abcdefghijklmnopqrstuvwxyz-0123456789"


async def section(page: Page, name: str) -> str:
    return await page.locator(f"#{name}").inner_text()


async def look_up(page: Page, user_id: str) -> None:
    await page.fill("input[name=id]", user_id)
    await page.click("button:has-text('Look up')")
    await page.wait_for_load_state()


async def test_a_user_is_shown_whole_and_an_unknown_one_is_not_found(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        key = new_key(db_url, "studio")
        async with httpx.AsyncClient(base_url=site.base, headers=auth(key)) as api:
            user = {
                "email": "anna@test.example",
                "phone": "+4915112345678",
                "locale": "de-DE",
                "timezone": "Europe/Berlin",
                "devices": [{"token": DEVICE, "platform": "ios"}],
            }
            assert (await api.put("/v1/users/anna", json=user)).status_code in (200, 201)
            assert (await api.put("/v1/users/anna/topics/series-dark")).status_code in (200, 204)
            prefs = {
                "muted": False,
                "categories": {"content": {"email": False}},
                "quiet_hours": {"push": {"start": "22:00", "end": "07:00"}},
            }
            response = await api.put("/v1/users/anna/preferences", json=prefs)
            assert response.status_code == 200, response.text
            for n in (1, 2):
                response = await api.post(
                    "/v1/events",
                    json={
                        "type": "new_episode",
                        "idempotency_key": f"dark-{n}",
                        "recipients": {"user_ids": ["anna"]},
                        "data": EPISODE | {"series": f"Dark {n}"},
                    },
                )
                assert response.status_code == 202, response.text
        first, second = [
            r[0]
            for r in await (await db.execute("SELECT id FROM notifications ORDER BY id")).fetchall()
        ]
        # What the dispatcher would have done: the inbox rows delivered, a push refused.
        await db.execute("UPDATE outbox SET status = 'delivered' WHERE consumer = 'inbox'")
        await db.execute(
            "UPDATE outbox SET status = 'dead', attempts = 3, last_error = 'provider said 500'"
            " WHERE consumer = 'push' AND notification_id = %s",
            [second],
        )
        async with httpx.AsyncClient(
            base_url=site.base, headers=bearer(client_token("anna"))
        ) as app:
            # The app shows the first notification, and a promotion.
            for tag, item in (("notifications", str(first)), ("promotions", "promo-7")):
                response = await app.post("/v1/seen", json={"tag": tag, "id": item})
                assert response.status_code == 200, response.text

        page = await site.signed_in("manager")
        await page.click("nav >> text=Users")
        await site.check_page(page, "users")
        await look_up(page, "anna")
        assert await page.locator("h1").inner_text() == "User anna"

        contacts = await section(page, "contacts")
        for shown in ("anna@test.example", "+4915112345678", "de-DE", "Europe/Berlin"):
            assert shown in contacts
        # The device, by platform and enough of its token to recognise it, not all of it.
        assert "ios device-token…" in contacts and DEVICE not in contacts
        assert "series-dark" in await section(page, "topics")

        preferences = page.locator("#preferences")
        assert "push: 22:00 to 07:00" in await preferences.inner_text()
        content = preferences.locator("tr[data-category=content]")
        assert await content.locator("td[data-channel=email]").inner_text() == "off"
        assert await content.locator("td[data-channel=push]").inner_text() == "on"
        assert await content.locator("td[data-channel=sms]").inner_text() == "off"  # default
        account = preferences.locator("tr[data-category=account]")
        assert "always on" in await account.inner_text()

        inbox = page.locator("#inbox")
        assert "(1 unread)" in await inbox.locator("h2").inner_text()
        rows = [
            await r.locator("td").all_inner_texts() for r in await inbox.locator("tbody tr").all()
        ]
        assert [(r[0], r[1], r[4]) for r in rows] == [
            (str(second), "New episode of Dark 2", "unread"),
            (str(first), "New episode of Dark 1", "read"),
        ]

        notifications = page.locator("#notifications")
        latest = await notifications.locator(f"tr[data-notification='{second}']").inner_text()
        assert "push: dead" in latest and "3 attempts" in latest and "provider said 500" in latest
        assert "inbox: delivered" in latest and "email: not sent preference" in latest
        earlier = notifications.locator(f"tr[data-notification='{first}']")
        assert (await earlier.locator("td").nth(4).inner_text()) != "—"  # seen, when

        marks = [
            await r.locator("td").all_inner_texts()
            for r in await page.locator("#marks tbody tr").all()
        ]
        assert {(m[0], m[1], m[4]) for m in marks} == {
            ("notifications", str(first), "no consumer"),
            ("promotions", "promo-7", "pending"),
        }
        await site.check_page(page, "user")

        await look_up(page, "ghost")
        assert await page.locator("p.error").inner_text() == (
            "No user with id 'ghost', nor one starting so."
        )
        assert await page.locator("#contacts").count() == 0
        assert "No seen marks by this user" in await section(page, "marks")
        await site.check_page(page, "user-unknown")
    # Looking users up changes nothing, so it is not audited.
    assert await scalar(db, "SELECT count(*) FROM audit_log WHERE action LIKE 'user%'") == 0
