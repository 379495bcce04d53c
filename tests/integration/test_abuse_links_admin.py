"""Abuse of unsubscribe links and of the admin panel's sign-in, over plain HTTP (no
browser: tests/e2e/test_admin_login.py drives the same in Chromium)."""

from __future__ import annotations

import re
import time
from typing import Any, LiteralString

import httpx
import jwt
import psycopg
import pytest

from service.admin.accounts import create_user
from service.notify.unsubscribe import AUDIENCE as LINK_AUDIENCE
from service.notify.unsubscribe import make_token
from tests.notify_api import Conn, assert_error, auth, new_key, running_api
from tests.support import make_config

pytestmark = pytest.mark.timeout(120)
PASSWORD = "manager-password-1"
ADMIN = {
    "max_failures": 3,
    "lockout": 600,
    "failure_delay": 0.05,
    "max_delay": 0.2,
    # Plain HTTP in the test: a __Host- cookie would need HTTPS.
    "secure_cookies": False,
}


# -- unsubscribe links ---------------------------------------------------------------------


async def preferences(db: Conn) -> list[tuple[Any, ...]]:
    cur = await db.execute("SELECT user_id, channels FROM preferences ORDER BY user_id")
    return await cur.fetchall()


async def test_an_unsubscribe_link_reused_forged_or_expired(
    db_url: str, api: httpx.AsyncClient, db: Conn
) -> None:
    key = auth(new_key(db_url))
    for user in ("anna", "ben"):
        assert (await api.put(f"/v1/users/{user}", json={}, headers=key)).status_code == 201
    notify = make_config(db_url).notify
    json_answer = {"Accept": "application/json"}

    good = make_token(notify, "anna", "content", environment="test")
    first = await api.post(f"/v1/unsubscribe/{good}", headers=json_answer)
    assert first.status_code == 200, first.text
    after_first = await preferences(db)
    # Reused: the same answer, and nothing more changes.
    again = await api.post(f"/v1/unsubscribe/{good}", headers=json_answer)
    assert (again.status_code, again.json()) == (200, first.json())
    assert await preferences(db) == after_first

    claims = jwt.decode(good, options={"verify_signature": False})
    forged = {
        "another key": jwt.encode(claims | {"sub": "ben"}, "x" * 40, algorithm="HS256"),
        "alg none": jwt.encode(claims | {"sub": "ben"}, "", algorithm="none"),
        "expired": make_token(
            notify, "ben", "content", environment="test", now=time.time() - 10**8
        ),
        "a session token's audience": jwt.encode(
            claims | {"sub": "ben", "aud": "mark-notify"}, "x" * 40, algorithm="HS256"
        ),
        "garbage": "not-a-token",
    }
    assert claims["aud"] == LINK_AUDIENCE
    for name, token in forged.items():
        response = await api.post(f"/v1/unsubscribe/{token}", headers=json_answer)
        assert response.status_code == 400, name
        assert_error(response, 400, "invalid_unsubscribe_link")
    assert await preferences(db) == after_first


# -- the admin panel -----------------------------------------------------------------------


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:300]
    return found[1]


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    form = await client.get("/admin/login")
    return await client.post(
        "/admin/login",
        data={"username": username, "password": password, "csrf": csrf_of(form.text)},
    )


async def test_admin_passwords_cannot_be_brute_forced(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_user(conn, "manager", PASSWORD, "manager", actor="test")
    async with running_api(db_url, admin=ADMIN) as client:
        statuses = [(await sign_in(client, "manager", f"guess-{n}")).status_code for n in range(3)]
        assert statuses == [401, 401, 429]
        # Locked: even the right password is refused, and an unknown name looks the same.
        assert (await sign_in(client, "manager", PASSWORD)).status_code == 429
        unknown = [(await sign_in(client, "nobody", f"g{n}")).status_code for n in range(4)]
        assert unknown[-1] == 429


async def test_admin_forms_need_their_csrf_token_and_sign_in_renews_the_session(
    db_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_user(conn, "manager", PASSWORD, "manager", actor="test")
    async with running_api(db_url, admin=ADMIN) as client:
        form = await client.get("/admin/login")
        planted = client.cookies.get("mn_admin")
        assert planted
        # Without the form's token, or with another: refused, not signed in.
        for csrf in ("", "guess"):
            response = await client.post(
                "/admin/login", data={"username": "manager", "password": PASSWORD, "csrf": csrf}
            )
            assert response.status_code == 403
        response = await client.post(
            "/admin/login",
            data={"username": "manager", "password": PASSWORD, "csrf": csrf_of(form.text)},
        )
        assert response.status_code in (200, 303)
        # Session fixation: the session known before sign-in is not the one signed in.
        signed_in = client.cookies.get("mn_admin")
        assert signed_in and signed_in != planted
        async with httpx.AsyncClient(base_url=str(client.base_url)) as attacker:
            attacker.cookies.set("mn_admin", planted)
            response = await attacker.get("/admin/", follow_redirects=False)
            assert response.status_code == 303
        # A cross-site POST with the victim's cookie but no token changes nothing.
        response = await client.post("/admin/logout", data={"csrf": "guess"})
        assert response.status_code == 403
        assert (await client.get("/admin/", follow_redirects=False)).status_code == 200


@pytest.mark.parametrize(
    "aged",
    [
        # Idle past [admin].idle (1 h):
        "UPDATE admin_sessions SET last_seen_at = now() - interval '2 hours'"
        " WHERE user_id IS NOT NULL",
        # Past its session_ttl, however busy:
        "UPDATE admin_sessions SET expires_at = now() - interval '1 second'"
        " WHERE user_id IS NOT NULL",
    ],
)
async def test_an_idle_or_expired_admin_session_ends(
    db_url: str, db: Conn, aged: LiteralString
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_user(conn, "manager", PASSWORD, "manager", actor="test")
    async with running_api(db_url, admin=ADMIN) as client:
        assert (await sign_in(client, "manager", PASSWORD)).status_code in (200, 303)
        assert (await client.get("/admin/", follow_redirects=False)).status_code == 200
        await db.execute(aged)
        response = await client.get("/admin/", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/admin/login")
