"""Signing in to /admin in Chromium: sessions, CSRF, lockout and their audit rows."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.admin_browser import PASSWORDS, admin_site

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def session(token: str) -> dict[str, str]:
    return {"Cookie": f"__Host-mn_admin={token}"}


async def audit_actions(db: Conn, actor: str) -> list[str]:
    cur = await db.execute("SELECT action FROM audit_log WHERE actor = %s ORDER BY id", [actor])
    return [row[0] for row in await cur.fetchall()]


async def test_sign_in_and_out_with_a_fresh_session_each_time(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        page = await site.new_page()
        await page.goto("/admin/")
        assert "/admin/login" in page.url  # not signed in: the form, not the dashboard
        await site.check_page(page, "login")
        before = {c["name"]: c for c in await page.context.cookies()}
        assert set(before) == {"__Host-mn_admin"}
        cookie = before["__Host-mn_admin"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"

        await site.login(page, "manager")
        assert page.url.endswith("/admin/")
        assert await page.locator("header .me").inner_text() == "manager (manager)"
        await site.check_page(page, "dashboard")
        after = {c["name"]: c["value"] for c in await page.context.cookies()}
        # A session token known before sign-in (say, one planted by an attacker) is
        # useless after it: sign-in made a new session and deleted the old one.
        assert after["__Host-mn_admin"] != cookie["value"]
        async with httpx.AsyncClient(base_url=site.base) as client:
            planted = await client.get(
                "/admin/", headers=session(cookie["value"]), follow_redirects=False
            )
            assert planted.status_code == 303
            assert planted.headers["location"].startswith("/admin/login")
            signed_in = await client.get("/admin/", headers=session(after["__Host-mn_admin"]))
            assert signed_in.status_code == 200
            assert signed_in.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in signed_in.headers["content-security-policy"]

        await page.click("text=Sign out")
        await page.wait_for_url("**/admin/login?why=signed_out")
        async with httpx.AsyncClient(base_url=site.base) as client:
            gone = await client.get("/admin/", headers=session(after["__Host-mn_admin"]))
            assert gone.status_code == 303
    assert await audit_actions(db, "manager") == ["login", "logout"]


async def test_a_form_without_its_csrf_token_is_refused(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        page = await site.signed_in("manager")
        # A forged sign-out from the same browser (the cookie goes along), without the token.
        forged = await page.request.post("/admin/logout", form={"csrf": "guess"})
        assert forged.status == 403
        still = await page.request.get("/admin/", max_redirects=0)
        assert still.status == 200  # the session was not ended
        login = await page.context.new_page()
        await login.goto("/admin/login")
        # A sign-in form posted without the token its session carries.
        response = await page.request.post(
            "/admin/login", form={"username": "manager", "password": PASSWORDS["manager"]}
        )
        assert response.status == 403
        assert "expired" in await response.text()
    # Nothing happened, and both refusals are on record.
    assert await audit_actions(db, "manager") == ["login", "refused", "refused"]


async def test_wrong_passwords_lock_the_account(db_url: str, db: Conn) -> None:
    async with admin_site(db_url) as site:
        page = await site.new_page()
        for _ in range(2):
            await site.login(page, "operator", "not-the-password")
            assert "Wrong username or password" in await page.locator(".error").inner_text()
        await site.login(page, "operator", "still-not-it")  # the third: locked (max_failures 3)
        # For how long, and until when: lockout is 600 s here.
        cur = await db.execute(
            "SELECT to_char(locked_until AT TIME ZONE 'UTC', 'HH24:MI') FROM admin_login_failures"
            " WHERE username = 'operator'"
        )
        until = await cur.fetchone()
        assert until is not None
        said = (
            f"locked for the next 10 minutes, until {until[0]} UTC. Try again then, or have it "
            "unlocked with bin/admin unlock."
        )
        assert said in await page.locator(".error").inner_text()
        await site.login(page, "operator")  # the right password is refused while locked
        assert said in await page.locator(".error").inner_text()
        assert "/admin/login" in page.url
        # An unknown name is answered the same way, and locked the same way.
        for _ in range(3):
            await site.login(page, "nobody", "whatever-it-is")
        assert "locked" in await page.locator(".error").inner_text()
        # Another account is not affected.
        other = await site.signed_in("manager")
        assert other.url.endswith("/admin/")
    actions = await audit_actions(db, "operator")
    assert actions == ["login_failed"] * 3 + ["login_refused"]
    cur = await db.execute(
        "SELECT after FROM audit_log WHERE actor = 'operator' AND action = 'login_failed'"
        " ORDER BY id"
    )
    assert [row[0] for row in await cur.fetchall()] == [
        {"failures": 1, "locked": False},
        {"failures": 2, "locked": False},
        {"failures": 3, "locked": True},
    ]
    assert await audit_actions(db, "nobody") == ["login_failed"] * 3
