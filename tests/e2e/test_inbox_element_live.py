"""The `<mark-notify-inbox>` element live: its stream (GET /v1/inbox/stream) in Chromium,
with the API and a dispatcher as processes (tests/inbox_browser.py). Two tabs of one user
and one of another; an API restart mid-stream; a preference switched off in the element."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.async_api import Page, expect

from tests.consumers import wait_until
from tests.inbox_browser import ELEMENT, inbox_stack

pytestmark = pytest.mark.timeout(240)
# The promise: an event shows in every open tab of its user within a second.
SHOWN_WITHIN_S = 1.0


def el(selector: str) -> str:
    return f"{ELEMENT} {selector}"


async def live(page: Page) -> None:
    await page.wait_for_function("document.querySelector('mark-notify-inbox').live")


async def shown(page: Page, item_id: str) -> None:
    """Until the item is in the tab's list (the panel open or not)."""
    await page.wait_for_function(
        "id => document.querySelector('mark-notify-inbox').items.some(i => i.id === id)",
        arg=item_id,
        polling="raf",
    )


async def test_two_tabs_of_one_user_and_one_of_another(db_url: str, tmp_path: Path) -> None:
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        await stack.user("ben")
        anna = await stack.browser.new_context()
        stack.contexts.append(anna)
        first = await stack.tab("anna", context=anna)
        second = await stack.tab("anna", context=anna)
        other = await stack.tab("ben")
        for page in (first, second, other):
            await live(page)
        await first.locator(el(".bell")).click()

        started = time.monotonic()
        event_id = await stack.event("anna")
        item_id = await stack.item_of(event_id, "anna")
        await asyncio.gather(shown(first, item_id), shown(second, item_id))
        took = time.monotonic() - started
        assert took < SHOWN_WITHIN_S, f"shown after {took:.2f} s"
        for page in (first, second):
            await expect(page.locator(el(".badge"))).to_have_text("1")
            await expect(page.locator(el("[aria-live=polite]"))).to_have_text(
                "New notification: New episode of Show 1"
            )
        # The open list shows it at once, as unseen.
        await expect(first.locator(el(".item.new .t"))).to_have_text(["New episode of Show 1"])

        # Mark it seen in one tab: the other's badge follows, through its own stream.
        await first.get_by_role("button", name="Mark as seen").click()
        await expect(first.locator(el(".badge"))).to_be_hidden()
        await expect(second.locator(el(".badge"))).to_be_hidden()
        await expect(second.locator(el(".bell"))).to_have_attribute("aria-label", "Notifications")
        await second.locator(el(".bell")).click()
        await expect(second.locator(el(".item .t"))).to_have_text(["New episode of Show 1"])
        await expect(second.locator(el(".item.new"))).to_have_count(0)

        # Ben's tab got nothing of Anna's: his own event is the first it shows.
        ben_event = await stack.event("ben")
        ben_item = await stack.item_of(ben_event, "ben")
        await shown(other, ben_item)
        assert [i["id"] for i in await items(other)] == [ben_item]
        await expect(other.locator(el(".badge"))).to_have_text("1")
        assert all(item_id not in str(m) for m in await received(other))


async def items(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(
        "document.querySelector('mark-notify-inbox').items"
    )
    return found


async def received(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate("window.received")
    return found


@pytest.mark.parametrize("token_ttl", [None, 2], ids=["resumed", "token-expired"])
async def test_an_api_restart_mid_stream_misses_and_repeats_nothing(
    db_url: str, tmp_path: Path, token_ttl: int | None
) -> None:
    """The browser reconnects with Last-Event-ID by itself; or, once its stream token has
    expired (token_ttl seconds), the element opens a new stream with last_event_id."""
    stream = {"token_ttl": token_ttl} if token_ttl else {}
    async with inbox_stack(db_url, tmp_path, stream) as stack:
        await stack.user("anna")
        opened = time.time()
        page = await stack.tab("anna")
        await live(page)
        sent = []
        for _ in range(3):
            sent.append(await stack.item_of(await stack.event("anna"), "anna"))
        await shown(page, sent[-1])

        # The API stops (its streams end); a producer writes straight to the database
        # meanwhile, the dispatcher delivers; the API comes back.
        stack.api.stop()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as db:
            for n in (4, 5):
                await db.execute(
                    "SELECT * FROM notify_event('sql', %s, 'new_episode', %s, %s)",
                    (
                        f"sql-{n}",
                        '{"user_ids": ["anna"]}',
                        f'{{"series": "Show {n}", "episode": {n}, "title": "T", "url": "https://x/{n}"}}',
                    ),
                )

        async def delivered_while_down() -> bool:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as db:
                cur = await db.execute(
                    "SELECT count(*) FROM outbox WHERE consumer = 'inbox' AND status = 'delivered'"
                )
                row = await cur.fetchone()
                return row is not None and row[0] == 5

        await wait_until(delivered_while_down, 30, "the dispatcher's deliveries")
        if token_ttl:

            async def expired() -> bool:
                return time.time() > opened + token_ttl + 1

            await wait_until(expired, token_ttl + 2, "the stream token's expiry")
        await stack.start_api()
        for _ in range(2):
            sent.append(await stack.item_of(await stack.event("anna"), "anna"))

        async def all_delivered() -> bool:
            return len((await stack.inbox("anna"))["items"]) == 7

        await wait_until(stack.alive(all_delivered), 30, "seven items in the inbox")
        every = [i["id"] for i in (await stack.inbox("anna"))["items"]]
        assert set(sent) <= set(every)
        await shown(page, every[0])
        await page.wait_for_function(
            "n => document.querySelector('mark-notify-inbox').items.length === n", arg=7
        )

        # The tab lists each once, newest first, and its badge counts them all.
        assert [i["id"] for i in await items(page)] == every
        await expect(page.locator(el(".badge"))).to_have_text("7")
        # What the browser received: one `ready`, then only `changes`, the stream resumed
        # where it was (no reset, no reload), every item in exactly one message.
        messages = await received(page)
        kinds = [m.get("type", "open") for m in messages]
        assert kinds.count("ready") == 1 and kinds[:2] == ["open", "ready"], kinds
        reopened = [m["open"] for m in messages if "open" in m][1:]
        # A new EventSource only when the browser's own reconnect was refused: the
        # expired token (else, the API answering while it started), resuming too.
        assert len(reopened) == 1 if token_ttl else len(reopened) <= 1, kinds
        assert all("last_event_id=" in url for url in reopened), reopened
        streamed = [
            i["id"] for m in messages if m.get("type") == "changes" for i in m["data"]["items"]
        ]
        assert sorted(streamed) == sorted(every), (streamed, every)


async def test_a_preference_switched_off_stops_the_next_event_on_that_channel(
    db_url: str, tmp_path: Path
) -> None:
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        page = await stack.tab("anna")
        await live(page)
        await page.locator(el(".bell")).click()
        dialog = page.get_by_role("dialog", name="Notifications")
        await dialog.get_by_role("button", name="Preferences").click()
        settings = page.get_by_role("dialog", name="Preferences")
        await settings.get_by_role("group", name="Content").get_by_label("Inbox").uncheck()
        await expect(page.locator(el(".st"))).to_have_text("Saved")
        await settings.get_by_role("button", name="Back").click()

        # The next content event is not delivered to the inbox; a receipt (billing, always
        # on) after it is, and shows: the stream was there to show the first.
        stopped = await stack.event("anna")
        counts = await stack.delivered(stopped)
        assert counts["sent"] == 0 and counts["suppressed"]["preference"] == 1, counts
        receipt = await stack.item_of(await stack.event("anna", "payment_receipt"), "anna")
        await shown(page, receipt)
        await expect(page.locator(el(".item .t"))).to_have_text(["Payment received"])
        assert [i["id"] for i in await items(page)] == [receipt]
