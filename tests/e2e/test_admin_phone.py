"""The admin panel on a phone (390 x 844) in Chromium: a table's rows are cards, so the
columns that decide (Status, Attempts, Last error of a delivery; Success, Backlog, Dead
letters of a consumer) are on screen without scrolling sideways; the audit log folds each
row's before and after into what changed, so its page stays short."""

from __future__ import annotations

from typing import Any

import psycopg
from playwright.async_api import Page, ViewportSize

from tests.admin_browser import AdminSite, admin_site
from tests.e2e.test_admin_deliveries import dead_notification

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}

# The cells of the first row whose label (the column's heading) matches, with where they
# are and what label a person reads before them.
CELLS = """([selector, pattern]) => {
  const row = document.querySelector(selector);
  const re = new RegExp(pattern);
  return [...row.children].filter(td => re.test(td.dataset.label || '')).map(td => {
    const r = td.getBoundingClientRect();
    return {label: td.dataset.label, left: r.left, right: r.right, top: r.top,
            shown: getComputedStyle(td, '::before').content, text: td.innerText,
            width: innerWidth, sideways: document.documentElement.scrollWidth > innerWidth};
  });
}"""


async def deciding_cells(page: Page, selector: str, pattern: str) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = await page.evaluate(CELLS, [selector, pattern])
    return cells


def on_screen(cells: list[dict[str, Any]], labels: set[str]) -> None:
    assert {c["label"] for c in cells} == labels, cells
    for c in cells:
        assert not c["sideways"], c
        assert 0 <= c["left"] and c["right"] <= c["width"], c


async def test_deliveries_and_consumers_show_their_deciding_columns_on_a_phone(
    db_url: str, db: Conn
) -> None:
    async with admin_site(db_url) as site:
        await dead_notification(db, "anna", "invoice_paid", "sms")
        for viewport in (PHONE, DESKTOP):
            page = await site.signed_in("operator", viewport["width"])
            await page.set_viewport_size(viewport)
            await page.goto("/admin/deliveries")
            cells = await deciding_cells(
                page, "#deliveries tbody tr[data-id]", "^(Status|Attempts|Last error)$"
            )
            on_screen(cells, {"Status", "Attempts", "Last error"})
            text = {c["label"]: c["text"] for c in cells}
            assert "dead" in text["Status"] and text["Attempts"].strip() == "2"
            assert "HTTP 503 from sms-fallback" in text["Last error"]
            if viewport is PHONE:
                # A card: each value follows its label.
                assert {c["shown"] for c in cells} == {'"Status"', '"Attempts"', '"Last error"'}
                for c in cells:
                    assert c["top"] < viewport["height"], c  # without scrolling down either

            await page.goto("/admin/consumers")
            cells = await deciding_cells(
                page, "#health tbody tr[data-consumer=sms]", "^(Success|Pending|Backlog|Dead)"
            )
            assert len(cells) >= 3, cells
            on_screen(cells, {c["label"] for c in cells})
            dead = next(c for c in cells if c["label"].startswith("Dead"))
            assert dead["text"].startswith("1"), dead


async def audit_page_height(site: AdminSite, width: int) -> tuple[int, list[str]]:
    page = await site.signed_in("manager", width)
    await page.goto("/admin/audit?action=mailing.update")
    await site.check_page(page, f"audit-{width}")
    await page.set_viewport_size({"width": width, "height": 900})
    height: int = await page.evaluate("document.documentElement.scrollHeight")
    first = page.locator("#audit tbody tr").first.locator(".audit-diff li")
    return height, await first.all_inner_texts()


async def test_the_audit_log_shows_what_changed_and_stays_short(db_url: str, db: Conn) -> None:
    rows = 14
    before = {f"field_{i}": f"a long enough value number {i} " * 3 for i in range(20)}
    after = before | {"name": "Launch news, second take", "field_3": "changed"}
    async with admin_site(db_url) as site:
        for n in range(rows):
            await db.execute(
                "INSERT INTO audit_log (actor, action, target, before, after)"
                " VALUES ('manager', 'mailing.update', %s, %s, %s)",
                [f"mailing:{n}", psycopg.types.json.Jsonb(before), psycopg.types.json.Jsonb(after)],
            )
        for width, per_row in ((390, 250), (1280, 120)):
            height, diff = await audit_page_height(site, width)
            # Only the changed keys, old → new, whatever the size of the JSON.
            assert diff == [
                f"field_3 {before['field_3'][:79]}… → changed",
                "name — → Launch news, second take",
            ], diff
            assert height < 400 + rows * per_row, (width, height)
        # An action that made something (no before) lists what it made.
        page = await site.signed_in("manager")
        await page.goto("/admin/audit?action=admin.create_user")
        made = page.locator("#audit tbody tr", has_text="manager").locator(".audit-diff li")
        assert await made.all_inner_texts() == ["role manager"]
