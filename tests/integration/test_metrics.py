"""/metrics of the API and of a dispatcher, scraped after real traffic and parsed as
Prometheus parses them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from tests.consumers import (
    Received,
    RecordingConsumer,
    Reply,
    add_marks,
    client,
    dispatch_config,
    http_consumer,
    running,
    wait_until,
)
from tests.notify_api import EPISODE, auth, new_key, running_api
from tests.support import bearer, client_token, free_port, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series is absent (nothing counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape(http: httpx.AsyncClient, url: str = "/metrics") -> Samples:
    response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


SEEN = {"method": "POST", "route": "/v1/seen"}
DELIVERIES = "mark_notify_deliveries_total"
DEAD_LETTERS = "mark_notify_outbox_dead_letters"


async def test_api_counts_requests_by_route_and_status_class_and_marks_per_tag(
    db_url: str,
) -> None:
    async with running_api(db_url) as api:
        before = await scrape(api)
        user = bearer(client_token("user-1"))
        marks = [
            {"tag": "promotions", "id": "p-1"},
            {"tag": "promotions", "id": "p-2"},
            {"tag": "promotions", "id": "p-1"},  # a repeat
            {"tag": "cashback", "id": "c-1"},
        ]
        for mark in marks:
            assert (await api.post("/v1/seen", json=mark, headers=user)).status_code == 200
        refused = [
            await api.post("/v1/seen", json={"tag": "nope", "id": "x"}, headers=user),
            await api.post("/v1/seen", json={"tag": "promotions", "id": "x"}),
        ]
        assert [r.status_code for r in refused] == [400, 401]
        key = auth(new_key(db_url))
        event = {
            "type": "new_episode",
            "idempotency_key": "dark-s1e3",
            "recipients": {"users": [{"id": "zed", "email": "zed@example.com"}]},
            "data": EPISODE,
        }
        await wait_until(lambda: _event_accepted(api, event, key), 10, "the event catalog")
        again = await api.post("/v1/events", json=event, headers=key)
        assert again.status_code == 200
        missing = await api.get("/v1/events/0190c0de-0000-7000-8000-000000000000", headers=key)
        assert missing.status_code == 404
        assert (await api.get("/no/such/page")).status_code == 404
        assert (await api.get("/admin/static/admin.css")).status_code == 200
        # A request is counted once its answer is sent: the client may scrape first.
        static = {"method": "GET", "route": "/admin/static/{path}", "status": "2xx"}
        scraped: list[Samples] = []

        async def counted() -> bool:
            scraped[:] = [await scrape(api)]
            return bool(delta(before, scraped[0], "mark_notify_http_requests_total", **static))

        await wait_until(counted, 10, "the last request to be counted")
        after = scraped[0]

    requests = "mark_notify_http_requests_total"
    assert delta(before, after, requests, **SEEN, status="2xx") == 4
    assert delta(before, after, requests, **SEEN, status="4xx") == 2
    assert delta(before, after, requests, **SEEN, status="5xx") == 0
    latency = "mark_notify_http_request_duration_seconds_count"
    assert delta(before, after, latency, **SEEN) == 6
    # Routes by their template, never by the path: ids would make a series per URL.
    event_status = {"method": "GET", "route": "/v1/events/{event_id}"}
    assert delta(before, after, requests, **event_status, status="4xx") == 1
    assert delta(before, after, requests, method="GET", route="unmatched", status="4xx") == 1
    assert delta(before, after, requests, method="POST", route="/v1/events", status="2xx") >= 2
    assert not any("/no/such/page" in dict(labels).get("route", "") for _, labels in after)
    # A file served by a Mount: the mount's prefix and any path, not the file's name.
    assert delta(before, after, requests, **static) == 1

    marks_total = "mark_notify_seen_marks_total"
    assert delta(before, after, marks_total, tag="promotions", result="recorded") == 2
    assert delta(before, after, marks_total, tag="promotions", result="duplicate") == 1
    assert delta(before, after, marks_total, tag="cashback", result="recorded") == 1
    assert delta(before, after, "mark_notify_seen_commit_marks_count") == 4
    assert delta(before, after, "mark_notify_seen_commit_marks_sum") == 4
    assert delta(before, after, "mark_notify_seen_commit_requests_sum") == 4

    events = "mark_notify_events_total"
    assert delta(before, after, events, type="new_episode", result="created") == 1
    assert delta(before, after, events, type="new_episode", result="repeat") == 1


async def _event_accepted(api: httpx.AsyncClient, event: Any, key: Mapping[str, str]) -> bool:
    # 503 until this process has mirrored its event types into the database.
    response = await api.post("/v1/events", json=event, headers=dict(key))
    assert response.status_code in (202, 503), response.text
    return response.status_code == 202


async def test_metrics_is_documented_as_an_ops_endpoint(db_url: str) -> None:
    async with running_api(db_url) as api:
        doc = (await api.get("/openapi.json")).json()
    operation = doc["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]
    assert "/healthz" in doc["paths"]


async def test_the_dispatcher_exports_deliveries_backlog_breakers_and_dead_letters(
    db: Conn, db_url: str
) -> None:
    async def reply(received: Received) -> Reply:
        return {"/failing": (503, {}), "/refusing": (400, {})}.get(received.path, (200, {}))

    consumer = RecordingConsumer(reply)
    port = free_port()
    # Consumers of this test only: the dispatcher's counters live as long as the process,
    # and other tests deliver to the usual ones.
    failing, healthy, refusing = "metrics-failing", "metrics-healthy", "metrics-refusing"
    tags = {
        name: {"consumer": name, "event_type": "client", "remember_for": 3600}
        for name in (failing, healthy, refusing)
    }
    async with serve(consumer.app) as base, httpx.AsyncClient() as http:
        config = dispatch_config(
            db_url,
            {
                # Opens after 3 failures in a row and stays open for the whole test.
                failing: http_consumer(f"{base}/failing", breaker={"failures": 3, "cooldown": 60}),
                healthy: http_consumer(f"{base}/healthy"),
                refusing: http_consumer(f"{base}/refusing"),
            },
            tags=tags,
            dispatcher={"metrics_port": port},
        )
        await add_marks(db, failing, failing, [(client(f"u{n}"), "p") for n in range(5)])
        await add_marks(db, healthy, healthy, [(client(f"u{n}"), "g") for n in range(4)])
        await add_marks(db, refusing, refusing, [(client("u1"), "b")])
        url = f"http://127.0.0.1:{port}/metrics"
        async with running(config, db_url), serve(create_app(config)) as api:
            event = {
                "type": "new_episode",
                "idempotency_key": "dark-s1e3",
                "recipients": {"users": [{"id": "zed"}]},
                "data": EPISODE,
            }
            key = auth(new_key(db_url))
            posted = await http.post(f"{api}/v1/events", json=event, headers=key)
            assert posted.status_code == 202, posted.text

            async def settled() -> bool:
                s = await scrape(http, url)
                return (
                    value(s, DELIVERIES, consumer=healthy, outcome="delivered") == 4
                    and value(s, "mark_notify_breaker_state", consumer=failing) == 2
                    and value(s, DEAD_LETTERS, consumer=refusing, status="failed") == 1
                    and value(s, "mark_notify_notifications_total", type="new_episode") == 1
                )

            await wait_until(settled, 15, "deliveries, an open breaker and a dead letter", 0.2)
            first = await scrape(http, url)
            await asyncio.sleep(1.5)
            second = await scrape(http, url)
            not_found = await http.get(f"http://127.0.0.1:{port}/")

    # The failing consumer: every attempt counted as a retry, its breaker opened once, and
    # its rows still owed, for longer at each scrape.
    failures = value(second, DELIVERIES, consumer=failing, outcome="retry")
    assert failures == sum(1 for r in consumer.requests if r.path == "/failing") >= 3
    assert value(second, DELIVERIES, consumer=failing, outcome="delivered") == 0
    assert value(second, "mark_notify_breaker_opens_total", consumer=failing) == 1
    assert value(second, "mark_notify_outbox_pending", consumer=failing) == 5
    age = "mark_notify_outbox_oldest_pending_age_seconds"
    assert 0 < value(first, age, consumer=failing) < value(second, age, consumer=failing)
    attempts = "mark_notify_delivery_attempt_duration_seconds_count"
    assert value(second, attempts, consumer=failing) == failures

    # The healthy one: delivered, nothing owed, breaker closed.
    assert value(second, attempts, consumer=healthy) == 4
    assert value(second, "mark_notify_breaker_state", consumer=healthy) == 0
    # The only dispatcher holds every bucket of each consumer.
    assert value(second, "mark_notify_buckets_held", consumer=healthy) == 64
    assert value(second, "mark_notify_outbox_pending", consumer=healthy) == 0
    assert value(second, age, consumer=healthy) == 0
    assert value(second, DEAD_LETTERS, consumer=healthy, status="dead") == 0

    # The refusing one: a permanent failure, kept as a dead letter.
    assert value(second, DELIVERIES, consumer=refusing, outcome="failed") == 1
    assert value(second, "mark_notify_metrics_database_up") == 1
    assert ("mark_notify_jobs", frozenset({"queue": "dispatch", "status": "todo"}.items())) in first
    assert not_found.status_code == 404
