"""The `<mark-notify-inbox>` element in Chromium, embedded by a page of another origin,
against the API and a dispatcher as processes (tests/inbox_browser.py): what a person sees
and can do with pointer and keyboard, in English and Russian, and what reaches the API."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, Route, expect

from tests.consumers import wait_until
from tests.inbox_browser import ELEMENT, InboxStack, inbox_stack
from tests.support import bearer, client_token

pytestmark = pytest.mark.timeout(240)


def part(page: Page, selector: str) -> str:
    return f"{ELEMENT} {selector}"


async def focused(page: Page) -> str:
    """What has the focus inside the element: its data-key, else its class."""
    found: str = await page.evaluate(
        """() => {
          const e = document.querySelector('mark-notify-inbox').shadowRoot.activeElement;
          return e ? (e.dataset.key || e.className) : '';
        }"""
    )
    return found


async def unseen_is(stack: InboxStack, user: str, n: int) -> None:
    async def check() -> bool:
        return bool((await stack.inbox(user))["unseen"] == n)

    await wait_until(stack.alive(check), 30, f"{user}'s unseen count at {n}")


async def test_the_feed_pages_and_marks_seen_with_keyboard_and_pointer(
    db_url: str, tmp_path: Path
) -> None:
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        for _ in range(25):
            await stack.event("anna")
        await unseen_is(stack, "anna", 25)
        # The first page is held on its way until the dialog is open: a person quicker
        # than the network still lands on the newest item once it is there.
        held = asyncio.Event()

        async def hold(route: Route) -> None:
            await held.wait()
            await route.continue_()

        context = await stack.browser.new_context()
        stack.contexts.append(context)
        await context.route(re.compile(r"/v1/inbox\?limit=10$"), hold)
        page = await stack.tab("anna", context=context, page_size="10")
        bell = page.locator(part(page, ".bell"))
        badge = page.locator(part(page, ".badge"))
        await expect(badge).to_have_text("25")
        await expect(bell).to_have_attribute("aria-label", "Notifications, 25 unseen")
        await expect(bell).to_have_attribute("aria-expanded", "false")

        # By keyboard: Tab from the host's button reaches the bell; Enter opens the dialog
        # with the newest item focused; arrows, Home and End move through the list.
        await page.locator("#before").focus()
        await page.keyboard.press("Tab")
        assert await focused(page) == "bell"
        await page.keyboard.press("Enter")
        await expect(bell).to_have_attribute("aria-expanded", "true")
        dialog = page.get_by_role("dialog", name="Notifications")
        await expect(dialog).to_be_visible()
        assert await focused(page) == "tb all"
        held.set()
        titles = page.locator(part(page, ".item .t"))
        await expect(titles).to_have_text([f"New episode of Show {n}" for n in range(25, 15, -1)])
        ids = [
            i
            for i in await page.locator(part(page, ".item")).evaluate_all(
                "items => items.map(i => i.dataset.id)"
            )
        ]
        assert await focused(page) == f"i{ids[0]}"
        await page.keyboard.press("ArrowDown")
        assert await focused(page) == f"i{ids[1]}"
        await page.keyboard.press("End")
        assert await focused(page) == f"i{ids[9]}"
        await page.keyboard.press("Home")
        assert await focused(page) == f"i{ids[0]}"

        # "Load more" pages on with the cursor, oldest last, and then is gone.
        more = dialog.get_by_role("button", name="Load more")
        await more.click()
        await expect(titles).to_have_count(20)
        await more.click()
        await expect(titles).to_have_text([f"New episode of Show {n}" for n in range(25, 0, -1)])
        await expect(more).to_have_count(0)

        # One item's "Mark as seen", and a click on another (the host keeps it from
        # navigating): both marked through POST /v1/seen.
        marks = dialog.get_by_role("button", name="Mark as seen")
        await expect(marks).to_have_count(25)
        await marks.first.click()
        await expect(badge).to_have_text("24")
        await page.locator(part(page, f'.item[data-id="{ids[1]}"] .main')).click()
        await expect(badge).to_have_text("23")
        assert await page.evaluate("window.clicked") == [ids[1]]
        assert page.url.startswith(stack.host)
        seen = {i["id"] for i in (await stack.inbox("anna"))["items"] if i["seen"]}
        assert seen == {ids[0], ids[1]}
        await expect(page.locator(part(page, ".item.new"))).to_have_count(23)

        # Escape closes, and the focus goes back to the bell.
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        await expect(bell).to_have_attribute("aria-expanded", "false")
        assert await focused(page) == "bell"

        # "Mark all as seen": every one, also past the page loaded first.
        await bell.click()
        await dialog.get_by_role("button", name="Mark all as seen").click()
        await expect(badge).to_be_hidden()
        await expect(bell).to_have_attribute("aria-label", "Notifications")
        await expect(page.locator(part(page, ".item.new"))).to_have_count(0)
        assert (await stack.inbox("anna"))["unseen"] == 0
        await expect(dialog.get_by_role("button", name="Mark all as seen")).to_be_disabled()

        # A click outside closes it too.
        await page.locator("#before").click()
        await expect(dialog).to_be_hidden()


async def test_russian(db_url: str, tmp_path: Path) -> None:
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("olga", locale="ru")
        await stack.event("olga")
        await unseen_is(stack, "olga", 1)
        page = await stack.tab("olga", locale="ru")
        bell = page.locator(part(page, ".bell"))
        await expect(bell).to_have_attribute("aria-label", "Уведомления, непросмотренных: 1")
        await bell.click()
        dialog = page.get_by_role("dialog", name="Уведомления")
        await expect(dialog).to_be_visible()
        # The item as the server renders it in the user's locale; its time in Russian.
        await expect(page.locator(part(page, ".item .t"))).to_have_text(["Новая серия «Show 1»"])
        await expect(page.locator(part(page, ".item time"))).to_have_text(
            re.compile(r"^(сейчас|\d+ (секунд|минут)\w* назад)$")
        )
        await expect(
            dialog.get_by_role("button", name="Отметить все как просмотренные")
        ).to_be_enabled()
        await dialog.get_by_role("button", name="Настройки").click()
        settings = page.get_by_role("dialog", name="Настройки")
        await expect(settings.get_by_text("Тихие часы")).to_be_visible()
        await expect(settings.get_by_label("Эл. почта").first).to_be_visible()
        await settings.get_by_role("button", name="Назад").click()
        await dialog.get_by_role("button", name="Отметить как просмотренное").click()
        await expect(page.locator(part(page, ".badge"))).to_be_hidden()
        await expect(bell).to_have_attribute("aria-label", "Уведомления")


async def test_preferences_switched_in_the_panel_are_what_the_api_keeps(
    db_url: str, tmp_path: Path
) -> None:
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        page = await stack.tab("anna")
        await page.locator(part(page, ".bell")).click()
        dialog = page.get_by_role("dialog", name="Notifications")
        await expect(dialog.get_by_text("No notifications yet")).to_be_visible()
        await dialog.get_by_role("button", name="Preferences").click()
        dialog = page.get_by_role("dialog", name="Preferences")
        status = page.locator(part(page, ".st"))

        def category(name: str) -> Locator:
            return dialog.get_by_role("group", name=re.compile(f"^{name}"))

        # Transactional categories are on, and cannot be switched off.
        billing_inbox = category("Billing").get_by_label("Inbox")
        await expect(billing_inbox).to_be_checked()
        await expect(billing_inbox).to_be_disabled()
        await expect(
            page.locator(part(page, "legend"), has_text="Billing (always on)")
        ).to_be_visible()

        async def preferences() -> dict[str, object]:
            got = await stack.http.get("/v1/preferences", headers=bearer(client_token("anna")))
            assert got.status_code == 200, got.text
            body: dict[str, object] = got.json()
            return body

        content_inbox = category("Content").get_by_label("Inbox")
        await expect(content_inbox).to_be_checked()
        await content_inbox.uncheck()
        await expect(status).to_have_text("Saved")
        assert (await preferences())["categories"]["content"]["inbox"] is False  # type: ignore[index]

        # Quiet hours for email: on with the times shown, then another start.
        quiet = category("Quiet hours")
        await quiet.get_by_label("Email", exact=True).check()
        await expect(quiet.get_by_label("Quiet hours, Email: From")).to_be_enabled()

        async def quiet_hours(expected: dict[str, str]) -> bool:
            return (await preferences())["quiet_hours"] == {"email": expected}

        await wait_until(lambda: quiet_hours({"start": "22:00", "end": "08:00"}), 10, "22-08")
        await quiet.get_by_label("Quiet hours, Email: From").fill("23:30")
        await wait_until(lambda: quiet_hours({"start": "23:30", "end": "08:00"}), 10, "23:30")

        # Mute all: kept, and the switches wait until it is off again.
        mute = dialog.get_by_label(re.compile("^Pause all notifications"))
        await mute.check()
        await expect(category("Social").get_by_label("Push")).to_be_disabled()
        await wait_until(lambda: _muted(preferences, True), 10, "muted")
        await mute.uncheck()
        await wait_until(lambda: _muted(preferences, False), 10, "not muted")
        await expect(category("Social").get_by_label("Push")).to_be_enabled()
        kept = await preferences()
        assert kept["categories"]["content"]["inbox"] is False  # type: ignore[index]
        assert kept["quiet_hours"] == {"email": {"start": "23:30", "end": "08:00"}}

        # The switch is honoured: the next content event is not delivered to the inbox.
        suppressed = await stack.event("anna")
        counts = await stack.delivered(suppressed)
        assert counts["sent"] == 0 and counts["suppressed"]["preference"] == 1, counts
        assert (await stack.inbox("anna"))["items"] == []


async def _muted(preferences: object, expected: bool) -> bool:
    got = await preferences()  # type: ignore[operator]
    return bool(got["muted"] is expected)


async def test_an_error_is_shown_with_a_retry(db_url: str, tmp_path: Path) -> None:
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        await stack.event("anna")
        await unseen_is(stack, "anna", 1)
        stack.host_app.state.refuse = True
        page = await stack.tab("anna")
        await page.locator(part(page, ".bell")).click()
        dialog = page.get_by_role("dialog", name="Notifications")
        alert = dialog.get_by_role("alert")
        await expect(alert).to_contain_text("Could not load notifications.")
        # The element asked for a new token once before giving up.
        assert len(stack.host_app.state.minted) >= 2
        stack.host_app.state.refuse = False
        await alert.get_by_role("button", name="Retry").click()
        await expect(page.locator(part(page, ".item .t"))).to_have_text(["New episode of Show 1"])
        await expect(page.locator(part(page, ".badge"))).to_have_text("1")


async def test_a_strict_content_security_policy_is_enough(db_url: str, tmp_path: Path) -> None:
    """The host page allows no inline style at all, and scripts and connections only
    from itself and the API: the element is styled, loads and marks seen all the same."""
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        await stack.event("anna")
        await unseen_is(stack, "anna", 1)
        page = await stack.tab("anna", csp="1")
        badge = page.locator(part(page, ".badge"))
        await expect(badge).to_have_text("1")
        assert await badge.evaluate("b => getComputedStyle(b).position") == "absolute"
        await page.locator(part(page, ".bell")).click()
        panel = page.get_by_role("dialog", name="Notifications")
        assert await panel.evaluate("p => getComputedStyle(p).position") == "absolute"
        await panel.get_by_role("button", name="Mark as seen").click()
        await expect(badge).to_be_hidden()
        assert (await stack.inbox("anna"))["unseen"] == 0
        assert await page.evaluate("window.violations") == []


async def test_what_an_event_carries_is_shown_as_text(db_url: str, tmp_path: Path) -> None:
    """Markup in event data is text on the page, and a link that is not http(s) is not
    one: the item is a button instead."""
    async with inbox_stack(db_url, tmp_path) as stack:
        await stack.user("anna")
        markup = '<img src=x onerror="window.pwned = 1">'
        await stack.event("anna", series=markup, url="javascript:window.pwned=2")
        await unseen_is(stack, "anna", 1)
        page = await stack.tab("anna")
        await page.locator(part(page, ".bell")).click()
        title = page.locator(part(page, ".item .t"))
        await expect(title).to_have_text(f"New episode of {markup}")
        await expect(page.locator(part(page, ".item img"))).to_have_count(0)
        main = page.locator(part(page, ".item .main"))
        assert await main.evaluate("m => m.tagName") == "BUTTON"
        await main.click()
        await expect(page.locator(part(page, ".badge"))).to_be_hidden()
        assert await page.evaluate("window.pwned") is None
        assert page.url.startswith(stack.host)


async def test_another_user_signs_in_on_the_same_page(db_url: str, tmp_path: Path) -> None:
    """A single-page app changes who is signed in: the element starts over for the new
    user (here from `getToken` to the `token` attribute) and shows nothing of the last."""
    async with inbox_stack(db_url, tmp_path) as stack:
        for user in ("anna", "ben"):
            await stack.user(user)
        await stack.event("anna")
        await stack.event("ben")
        await stack.event("ben")
        await unseen_is(stack, "ben", 2)
        page = await stack.tab("anna")
        badge = page.locator(part(page, ".badge"))
        await expect(badge).to_have_text("1")
        await page.locator(part(page, ".bell")).click()
        titles = page.locator(part(page, ".item .t"))
        await expect(titles).to_have_text(["New episode of Show 1"])
        await page.evaluate(
            """token => {
              const inbox = document.getElementById("inbox");
              inbox.getToken = null;
              inbox.setAttribute("token", token);
            }""",
            client_token("ben"),
        )
        await expect(titles).to_have_text(["New episode of Show 3", "New episode of Show 2"])
        await expect(badge).to_have_text("2")
