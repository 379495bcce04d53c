"""GET / says where to go: the docs, the contract, the admin panel, health and metrics,
as JSON for programs and as a page of links for a browser. A 404 there told a newcomer
nothing."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from tests.notify_api import running_api


async def test_the_root_links_to_everything_a_newcomer_looks_for(db_url: str) -> None:
    async with running_api(db_url) as api:
        response = await api.get("/")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        links = response.json()
        assert links["service"] == "mark-notify"
        assert "docs/" in links["docs"]
        paths = {name: links[name] for name in ("openapi", "admin", "healthz", "readyz", "metrics")}
        # Every link it gives answers (the admin panel with its sign-in page).
        for name, path in paths.items():
            answer = await api.get(path, follow_redirects=True)
            assert answer.status_code == 200, (name, path, answer.status_code)

        page = await api.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert set(re.findall(r'href="([^"]+)"', page.text)) == set(paths.values())

        # The admin panel's redirect (to its sign-in page) is counted as such.
        assert (await api.get("/admin/")).status_code in (302, 303, 307)
        metrics = (await api.get("/metrics")).text
        classes = {
            sample.labels["status"]
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "mark_notify_http_requests_total"
        }
        assert {"2xx", "3xx"} <= classes


async def test_without_the_admin_panel_the_root_does_not_link_to_it(db_url: str) -> None:
    async with running_api(db_url, admin={"enabled": False}) as api:
        assert (await api.get("/")).json()["admin"] is None
        page = await api.get("/", headers={"Accept": "text/html"})
        assert "/admin" not in page.text
