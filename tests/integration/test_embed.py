"""The inbox element's script as the API serves it (service/notify/embed.py), CORS for the
browser-facing endpoints (service/cors.py, `[api] cors_origins`), and bin/dev's demo page
(service/dev/demo_page.py), against a real uvicorn and the real database."""

from __future__ import annotations

import jwt
import pytest

from service.config.base import ConfigError
from service.notify import embed
from tests.notify_api import assert_error, auth, new_key, running_api
from tests.support import AUDIENCE, JWT_SECRET, bearer, client_token, make_config

APP = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_the_script_is_served_cached_by_its_etag_and_to_any_origin(db_url: str) -> None:
    async with running_api(db_url) as api:
        got = await api.get(embed.PATH, headers={"Origin": APP})
        assert got.status_code == 200
        assert got.headers["content-type"] == "text/javascript; charset=utf-8"
        assert got.headers["content-encoding"] == "gzip"  # httpx asks for it, and unpacks it
        assert got.content == embed.FILE.read_bytes()
        assert got.content.startswith(b"/* <mark-notify-inbox>")
        assert got.headers["access-control-allow-origin"] == "*"
        assert got.headers["cache-control"] == "public, max-age=3600"
        assert got.headers["x-content-type-options"] == "nosniff"
        etag = got.headers["etag"]
        assert etag.startswith('"') and len(etag) == 22

        plain = await api.get(embed.PATH, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == got.content and plain.headers["etag"] == etag

        again = await api.get(embed.PATH, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        weak = await api.get(embed.PATH, headers={"If-None-Match": f'"other", W/{etag}'})
        assert weak.status_code == 304
        stale = await api.get(embed.PATH, headers={"If-None-Match": '"an-older-release"'})
        assert stale.status_code == 200 and stale.content == got.content

        head = await api.head(embed.PATH)
        assert head.status_code == 200 and head.content == b""
        assert_error(await api.post(embed.PATH), 405, "method_not_allowed")


async def test_no_other_origin_is_allowed_unless_configured(db_url: str) -> None:
    async with running_api(db_url) as api:
        preflight = await api.options("/v1/seen", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        assert_error(preflight, 405, "method_not_allowed")
        got = await api.get("/v1/inbox", headers={"Origin": APP} | bearer(client_token("anna")))
        assert got.status_code == 200
        assert "access-control-allow-origin" not in got.headers


async def test_configured_origins_may_call_the_browser_endpoints_only(db_url: str) -> None:
    api_settings = {"max_body_bytes": 4096, "cors_origins": [APP, "http://127.0.0.1:3000"]}
    async with running_api(db_url, api=api_settings) as api:
        key = auth(new_key(db_url))
        assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
        anna = bearer(client_token("anna"))
        for path, method in (
            ("/v1/seen", "POST"),
            ("/v1/inbox", "GET"),
            ("/v1/inbox/stream-token", "POST"),
            ("/v1/preferences", "PUT"),
        ):
            asked = PREFLIGHT | {"Access-Control-Request-Method": method}
            preflight = await api.options(path, headers=asked)
            assert preflight.status_code == 200, (path, preflight.text)
            assert preflight.headers["access-control-allow-origin"] == APP
            assert "Authorization" in preflight.headers["access-control-allow-headers"]
            assert method in preflight.headers["access-control-allow-methods"]
            assert "access-control-allow-credentials" not in preflight.headers

        # The answers carry the header for that origin, errors too.
        origin = {"Origin": APP}
        seen = await api.post(
            "/v1/seen", json={"tag": "notifications", "id": "1"}, headers=origin | anna
        )
        assert seen.status_code == 200, seen.text
        assert seen.headers["access-control-allow-origin"] == APP
        inbox = await api.get("/v1/inbox", headers=origin | anna)
        assert inbox.headers["access-control-allow-origin"] == APP
        assert "Retry-After" in inbox.headers["access-control-expose-headers"]
        refused = await api.get("/v1/preferences", headers=origin)
        assert_error(refused, 401, "unauthenticated")
        assert refused.headers["access-control-allow-origin"] == APP

        # Another origin gets nothing it could read.
        stranger = {"Origin": "https://evil.example"}
        preflight = await api.options("/v1/inbox", headers=PREFLIGHT | stranger)
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        inbox = await api.get("/v1/inbox", headers=stranger | anna)
        assert inbox.status_code == 200 and "access-control-allow-origin" not in inbox.headers

        # The stream too: an EventSource of that page reads it.
        stream = await api.get("/v1/inbox/stream", params={"token": "x.y.z"}, headers=origin)
        assert_error(stream, 401, "invalid_stream_token")
        assert stream.headers["access-control-allow-origin"] == APP

        # The producers' endpoints never, whatever the setting; nor a path only below a
        # listed one (the preference center's pages).
        preflight = await api.options("/v1/events", headers=PREFLIGHT)
        assert_error(preflight, 405, "method_not_allowed")
        center = await api.options("/v1/preferences/manage/x.y.z", headers=PREFLIGHT)
        assert center.status_code == 405
        assert "access-control-allow-origin" not in center.headers
        users = await api.get("/v1/users/anna", headers=origin | key)
        assert users.status_code == 200 and "access-control-allow-origin" not in users.headers


@pytest.mark.parametrize(
    "origin",
    ["https://app.example.com/", "https://app.example.com/path", "HTTPS://APP", "*.example.com"],
)
def test_an_origin_is_written_as_a_browser_sends_it(db_url: str, origin: str) -> None:
    with pytest.raises(ConfigError, match="cors_origins"):
        make_config(db_url, api={"cors_origins": [origin]})


async def test_the_demo_page_is_not_there_outside_development(db_url: str) -> None:
    async with running_api(db_url) as api:
        for method, path in (("GET", "/dev/inbox"), ("POST", "/dev/inbox/token")):
            assert_error(await api.request(method, path), 404, "not_found")


async def test_the_demo_page_in_development(db_url: str) -> None:
    async with running_api(db_url, environment="development") as api:
        page = await api.get("/dev/inbox", params={"user": "<b>x&", "locale": "ru"})
        assert page.status_code == 200
        assert '<script src="/embed/mark-notify-inbox.js"></script>' in page.text
        assert '<mark-notify-inbox id="inbox" locale="ru">' in page.text
        assert "<b>x" not in page.text and "&lt;b&gt;x&amp;" in page.text
        assert '"\\u003cb>x&"' in page.text
        assert_error(await api.get("/dev/inbox", params={"user": "a/b"}), 400, "invalid_query")
        assert_error(await api.get("/dev/inbox", params={"locale": "de"}), 400, "invalid_query")

        # A token for a new user, who exists from then on, with its locale.
        got = await api.post("/dev/inbox/token", json={"user": "dana", "locale": "ru"})
        assert got.status_code == 200, got.text
        token = got.json()["token"]
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE)
        assert (claims["kind"], claims["sub"]) == ("client", "dana")
        prefs = await api.get("/v1/preferences", headers=bearer(token))
        assert prefs.status_code == 200, prefs.text
        user = await api.get("/v1/users/dana", headers=auth(new_key(db_url)))
        assert user.json()["locale"] == "ru"
        assert_error(await api.post("/dev/inbox/token", json={"user": "a/b"}), 400, "invalid_body")

        sent = await api.post("/dev/inbox/event", json={"user": "dana", "locale": "ru"})
        assert sent.status_code == 202, sent.text
        status = await api.get(
            f"/v1/events/{sent.json()['id']}", headers=auth(new_key(db_url, "dev-demo"))
        )
        assert status.json()["type"] == "new_episode"
        assert status.json()["recipients"]["notified"] == 1, status.json()


async def test_a_cross_origin_page_reaches_the_stream_token(db_url: str) -> None:
    async with running_api(db_url, api={"cors_origins": [APP]}) as api:
        got = await api.post(
            "/v1/inbox/stream-token", headers={"Origin": APP} | bearer(client_token("anna"))
        )
        assert got.status_code == 200, got.text
        assert got.headers["access-control-allow-origin"] == APP
        assert got.json()["stream_url"].startswith("/v1/inbox/stream?token=")
