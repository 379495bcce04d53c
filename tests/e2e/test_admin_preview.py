"""A mailing's email preview in Chromium looks as a mail client shows it: the template's
inline styles apply (the footer is grey, not black), no CSP violation is logged, nothing in
it runs, and the frame is as tall as the email, at desktop and phone widths."""

from __future__ import annotations

from typing import Any

from playwright.async_api import ConsoleMessage, Page

from tests.admin_browser import WIDTHS, AdminSite, admin_site
from tests.consumers import wait_until
from tests.e2e.test_admin_mailings import fill_texts, new_mailing

GREY = "rgb(136, 136, 136)"  # color:#888 in config/templates/announcement/en.toml

# The frame's document as a person sees it: the footer's colour, and whether it scrolls.
FRAME_STATE = """(frame) => {
  const doc = frame.contentDocument;
  const footer = [...doc.querySelectorAll('p')].find(p => p.textContent.includes('Unsubscribe'));
  return {
    footer: footer ? getComputedStyle(footer).color : null,
    scrolls: doc.documentElement.scrollHeight > frame.contentWindow.innerHeight + 1,
    width: frame.getBoundingClientRect().width,
  };
}"""


async def frame_state(page: Page) -> dict[str, Any]:
    frame = page.locator("section[data-channel=email] iframe.mailing-html")
    result: dict[str, Any] = await frame.evaluate(FRAME_STATE)
    return result


async def preview_at(site: AdminSite, width: int) -> None:
    page = await site.signed_in("manager", width)
    violations: list[str] = []

    def seen(message: ConsoleMessage, violations: list[str] = violations) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", seen)
    await new_mailing(page)
    await page.fill("[name=name]", f"Styled {width}")
    await fill_texts(page, "en", "Hello")
    await page.check("input[name=audience][value=all]")
    await page.click("button:has-text('Save draft')")
    await page.wait_for_load_state()
    await page.click("section >> button:has-text('Preview')")
    await page.wait_for_load_state()
    frame = page.frame_locator("section[data-channel=email] iframe.mailing-html")
    assert "Hello body" in await frame.locator("p").first.inner_text()
    # The long body (a few lines) is taller than the frame's first height: it grows.
    state = await frame_state(page)

    async def fitted() -> bool:
        nonlocal state
        state = await frame_state(page)
        return not state["scrolls"]

    await wait_until(fitted, 10, "the frame as tall as the email")
    assert state["footer"] == GREY, state

    # The phone width: the frame narrows to 390 px (or the card, if narrower) and
    # grows to the email's new height.
    await page.click("section[data-channel=email] >> text=Phone (390 px)")

    async def narrowed() -> bool:
        nonlocal state
        state = await frame_state(page)
        return state["width"] <= 390 and not state["scrolls"]

    await wait_until(narrowed, 10, "the phone-wide frame as tall as the email")
    assert state["footer"] == GREY
    await site.check_page(page, f"mailings-preview-styled-{width}")
    assert violations == []

    # The frame's own response: inline styles and nothing that runs.
    response = await page.request.get(page.url.split("?")[0] + "/email.html?user=&locale=")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp
    assert "script-src" not in csp
    assert "frame-ancestors 'self'" in csp
    sandbox = await page.locator("iframe.mailing-html").get_attribute("sandbox")
    assert sandbox is not None and "allow-scripts" not in sandbox


async def test_the_email_preview_keeps_the_templates_styles_at_both_widths(db_url: str) -> None:
    async with admin_site(db_url) as site:
        for width in WIDTHS:
            await preview_at(site, width)
