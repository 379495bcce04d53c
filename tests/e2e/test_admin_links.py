"""Moving between related things in the admin, in Chromium: the header's lookup box finds
what was pasted (an event, a user by email whatever its case, a webhook id; several users
by the start of their id; nothing), an event's page counts its deliveries per channel and
links to them, a user's notifications, marks and deliveries link to each other, the
dashboard's bars to the deliveries they count, and the users page lists the users changed
last."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from playwright.async_api import Page

from tests.admin_browser import WIDTHS, admin_site
from tests.consumers import scalar
from tests.notify_api import EPISODE, auth, new_key
from tests.support import bearer, client_token

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def look_up(page: Page, text: str) -> None:
    await page.fill("header form.lookup input[name=q]", text)
    await page.press("header form.lookup input[name=q]", "Enter")
    await page.wait_for_load_state()


async def listed_deliveries(page: Page) -> list[tuple[str, str]]:
    """(consumer, status) of each row of the deliveries list."""
    rows = page.locator("#deliveries tbody tr[data-id]")
    return [
        (
            (await row.locator("td[data-label=Consumer]").inner_text()).strip(),
            (await row.locator("td[data-label=Status] .badge").inner_text()).strip(),
        )
        for row in await rows.all()
    ]


async def test_lookup_and_links_lead_from_an_event_to_its_deliveries_and_users(
    db_url: str, db: Conn
) -> None:
    async with admin_site(db_url) as site:
        key = new_key(db_url, "studio")
        async with httpx.AsyncClient(base_url=site.base, headers=auth(key)) as api:
            for user, email in (("anna", "Anna@Test.example"), ("annabel", None), ("bob", None)):
                body = {"email": email, "devices": [{"token": f"tok-{user}", "platform": "ios"}]}
                response = await api.put(f"/v1/users/{user}", json=body)
                assert response.status_code in (200, 201), response.text
            response = await api.post(
                "/v1/events",
                json={
                    "type": "new_episode",
                    "idempotency_key": "dark-links",
                    "recipients": {"user_ids": ["anna", "annabel"]},
                    "data": EPISODE,
                },
            )
            assert response.status_code == 202, response.text
            event_id = response.json()["id"]
        async with httpx.AsyncClient(
            base_url=site.base, headers=bearer(client_token("anna"))
        ) as app:
            response = await app.post("/v1/seen", json={"tag": "promotions", "id": "promo-9"})
            assert response.status_code == 200, response.text
        # What a dispatcher might have made of it: Anna's push ran out of attempts.
        dead_id = await scalar(
            db,
            "UPDATE outbox SET status = 'dead', attempts = 3, last_error = 'provider said 500'"
            " WHERE consumer = 'push' AND ordering_key = 'anna' RETURNING id",
        )
        webhook_id = str(await scalar(db, "SELECT event_id FROM outbox WHERE id = %s", [dead_id]))

        page = await site.signed_in("operator")
        # An event id pasted in the header: its page, with per-channel counts.
        await look_up(page, event_id)
        assert page.url.endswith(f"/admin/events/{event_id}"), page.url
        push = page.locator("#event-channels tr[data-channel=push]")
        assert (await push.locator("td.dead").inner_text()).strip() == "1"
        assert (await push.locator("td.queued").inner_text()).strip() == "1"  # Annabel's
        await site.check_page(page, "event")
        # Its dead push, one click away; its user another.
        await push.locator("td.dead a").click()
        await page.wait_for_load_state()
        assert await listed_deliveries(page) == [("push", "dead")]
        assert event_id in await page.locator("#narrowed").inner_text()
        await page.locator("#deliveries td[data-label=Subject] a").click()
        await page.wait_for_load_state()
        assert await page.locator("h1").inner_text() == "User anna"

        # The user's notification → its deliveries (every channel of it).
        notification = page.locator("#notifications tbody tr[data-notification]").first
        await notification.locator("td a").first.click()
        await page.wait_for_load_state()
        assert sorted(c for c, _ in await listed_deliveries(page)) == ["email", "inbox", "push"]
        # The user's seen mark → its delivery to the tag's consumer.
        await page.go_back()
        await page.locator("#marks a.mark-delivery").click()
        await page.wait_for_load_state()
        facts = await page.locator("#delivery-facts").inner_text()
        assert "promotions" in facts and "client:anna" in facts

        # An email, whatever its case; a webhook id; the start of ids; nothing.
        await look_up(page, "anna@test.EXAMPLE")
        assert await page.locator("h1").inner_text() == "User anna"
        await look_up(page, webhook_id)
        assert page.url.endswith(f"/admin/deliveries/{dead_id}"), page.url
        await look_up(page, "ann")
        found = await page.locator("#lookup-results li").all_inner_texts()
        assert [f.split()[1] for f in found] == ["anna", "annabel"], found
        await site.check_page(page, "lookup-several")
        await look_up(page, "zz-nobody")
        assert "Nothing is called" in await page.locator("#nothing-found").inner_text()

        # The users page before a search: the users changed last, newest first.
        await page.goto("/admin/users")
        recent = await page.locator("#user-list td[data-label=Id]").all_inner_texts()
        assert recent[:3] == ["bob", "annabel", "anna"], recent
        # A start of an id or an email there lists the matches.
        await page.fill("input[name=id]", "ANNA@")
        await page.click("button:has-text('Look up')")
        await page.wait_for_load_state()
        assert await page.locator("#user-list td[data-label=Id]").all_inner_texts() == ["anna"]

        # The dashboard's dead-letter bar segment of push → those deliveries.
        await page.goto("/admin/")
        segment = page.locator('svg a[href="/admin/deliveries?consumer=push&status=dead"]')
        await segment.first.click()
        await page.wait_for_load_state()
        assert await listed_deliveries(page) == [("push", "dead")]

        # Ids that are no ids are said so, and change nothing.
        await page.goto("/admin/deliveries?event=nope&notification=123456789012345678901")
        error = await page.locator("p.error").inner_text()
        assert "'nope' is not an event id" in error and "is not a notification id" in error
        answer = await page.goto("/admin/events/not-a-uuid")
        assert answer is not None and answer.status == 404

        # The lookup box fits the header at both widths.
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 844})
            box = await page.locator("header form.lookup input").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
