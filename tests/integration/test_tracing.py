"""One W3C traceparent followed from POST /v1/seen to the consumers (HTTP and Kafka) and
through the log lines in between; a request without one, or with an invalid one, starts
a new trace that is followed the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest

from service.app import create_app
from service.config.load import Config, parse_config
from service.logs import SEEN_ACCESS_LOG_RATE
from service.tracing import parse_traceparent
from tests.consumers import RecordingConsumer, http_consumer, running, wait_until
from tests.kafka_broker import TansuBroker, kafka_settings, read_topic
from tests.log_capture import CapturedLogs, captured_logs
from tests.support import bearer, client_token, config_data, serve

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
KAFKA_CONSUMER = "seen-kafka"


def tracing_config(db_url: str, http_url: str, broker: TansuBroker | None = None) -> Config:
    """`promotions` marks go to the HTTP consumer; with a broker, `cashback` marks to Kafka."""
    data = config_data(db_url)
    data["consumers"] = {"promotions": http_consumer(http_url)}
    data["tags"] = {
        "promotions": {"consumer": "promotions", "event_type": "client", "remember_for": 3600},
        "notifications": {"event_type": "client", "remember_for": 3600},
    }
    if broker is not None:
        data["kafka"] = msgspec.to_builtins(kafka_settings(broker))
        data["consumers"][KAFKA_CONSUMER] = {"transport": "kafka"}
        data["tags"]["cashback"] = {
            "consumer": KAFKA_CONSUMER,
            "event_type": "client",
            "remember_for": 3600,
        }
    return parse_config(data, "tracing-test")


@asynccontextmanager
async def service(config: Config, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running(config, db_url),
        serve(create_app(config)) as api,
        httpx.AsyncClient(base_url=api, timeout=10) as http,
    ):
        yield http


async def mark(http: httpx.AsyncClient, tag: str, item: str, **headers: str) -> httpx.Response:
    response = await http.post(
        "/v1/seen",
        json={"tag": tag, "id": item},
        headers=bearer(client_token("user-1")) | headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "recorded"
    return response


async def received_by_http(consumer: RecordingConsumer, item: str) -> dict[str, str]:
    async def arrived() -> bool:
        return any(r.body["id"] == item for r in consumer.requests)

    await wait_until(arrived, 10, f"{item} at the HTTP consumer")
    return next(r.headers for r in consumer.requests if r.body["id"] == item)


def request_line(logs: CapturedLogs, response: httpx.Response) -> dict[str, Any]:
    """The API's line for the request that got this response."""
    (line,) = logs.where(logger="service.access", request_id=response.headers["x-request-id"])
    assert line["method"] == "POST"
    assert line["route"] == "/v1/seen"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    return line


async def attempt_line(logs: CapturedLogs, consumer: str, trace_id: str) -> dict[str, Any]:
    # The attempt is logged right after the consumer answered: give the loop a moment.
    async def logged() -> bool:
        return bool(logs.where(logger="dispatcher.attempts", consumer=consumer, trace_id=trace_id))

    await wait_until(logged, 5, f"the attempt line of {consumer}")
    (line,) = logs.where(logger="dispatcher.attempts", consumer=consumer, trace_id=trace_id)
    assert line["outcome"] == "delivered"
    assert line["attempt"] == 1
    assert isinstance(line["outbox_id"], int)
    assert line["duration_ms"] >= 0
    return line


@pytest.mark.kafka
async def test_a_traceparent_goes_from_post_seen_to_both_consumers_and_the_log_lines_between(
    db_url: str, kafka_broker: TansuBroker
) -> None:
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        config = tracing_config(db_url, f"{base}/seen", kafka_broker)
        with captured_logs() as logs:
            async with service(config, db_url) as http:
                to_http = await mark(http, "promotions", "promo-1", traceparent=TRACEPARENT)
                to_kafka = await mark(http, "cashback", "cash-1", traceparent=TRACEPARENT)
                header = await received_by_http(consumer, "promo-1")
                topic = config.kafka.topics["client"]
                records = await read_topic(config.kafka.bootstrap_servers, topic, expect=1)
                http_attempt = await attempt_line(logs, "promotions", TRACE_ID)
                kafka_attempt = await attempt_line(logs, KAFKA_CONSUMER, TRACE_ID)

    # The HTTP consumer gets the same trace, as a new span of it.
    sent = parse_traceparent(header["traceparent"])
    assert sent is not None
    assert sent.trace_id == TRACE_ID
    assert sent.span_id != CLIENT_SPAN
    # Kafka: the same, as a message header.
    (record,) = records
    headers = dict(record.headers)
    from_kafka = parse_traceparent(headers["traceparent"].decode())
    assert from_kafka is not None
    assert from_kafka.trace_id == TRACE_ID
    assert from_kafka.span_id not in (CLIENT_SPAN, sent.span_id)
    assert headers["event-id"] == msgspec.json.decode(record.value)["event_id"].encode()

    # The log lines between: each request's, and each delivery attempt's, whose span is
    # the one the consumer received.
    assert request_line(logs, to_http)["trace_id"] == TRACE_ID
    assert request_line(logs, to_kafka)["trace_id"] == TRACE_ID
    assert http_attempt["span_id"] == sent.span_id
    assert kafka_attempt["span_id"] == from_kafka.span_id
    assert kafka_attempt["status_code"] is None


async def test_without_a_valid_traceparent_the_api_starts_a_trace_the_consumer_continues(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request line, not the production sample (the caller's traces are unsampled).
    monkeypatch.setenv(SEEN_ACCESS_LOG_RATE, "1")
    consumer = RecordingConsumer()
    invalid = {
        "none": None,
        "zero-trace": f"00-{'0' * 32}-{CLIENT_SPAN}-01",
        "zero-span": f"00-{TRACE_ID}-{'0' * 16}-01",
        "upper-case": TRACEPARENT.upper(),
        "version-ff": f"ff-{TRACE_ID}-{CLIENT_SPAN}-01",
        "too-long": TRACEPARENT + "-extra",
        "garbage": "not a traceparent",
    }
    async with serve(consumer.app) as base:
        config = tracing_config(db_url, f"{base}/seen")
        with captured_logs() as logs:
            async with service(config, db_url) as http:
                responses = {
                    name: await mark(
                        http, "promotions", name, **({"traceparent": tp} if tp else {})
                    )
                    for name, tp in invalid.items()
                }
                received = {name: await received_by_http(consumer, name) for name in invalid}
                for name in invalid:
                    trace_id = request_line(logs, responses[name])["trace_id"]
                    await attempt_line(logs, "promotions", trace_id)

    trace_ids = set()
    for name in invalid:
        # Refused as a parent, never as a request: a new trace, followed to the consumer.
        trace_id = request_line(logs, responses[name])["trace_id"]
        assert len(trace_id) == 32 and trace_id not in (TRACE_ID, "0" * 32), name
        sent = parse_traceparent(received[name]["traceparent"])
        assert sent is not None, name
        assert sent.trace_id == trace_id, name
        trace_ids.add(trace_id)
    assert len(trace_ids) == len(invalid)


async def test_a_request_id_is_taken_when_well_formed_and_echoed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEEN_ACCESS_LOG_RATE, "0")
    consumer = RecordingConsumer()
    async with serve(consumer.app) as base:
        config = tracing_config(db_url, f"{base}/seen")
        with captured_logs() as logs:
            async with serve(create_app(config)) as api, httpx.AsyncClient(base_url=api) as http:
                kept = await http.get("/healthz", headers={"X-Request-Id": "req-42.a"})
                made = await http.get("/healthz", headers={"X-Request-Id": "two words"})
                missing = await http.get("/v1/events/some-id")
                seen = await http.post(
                    "/v1/seen", json={}, headers={"X-Request-Id": "seen-1"} | bearer("bad")
                )
                # With no sampling, a 200 gets its line only when its trace is sampled.
                sampled = await mark(http, "promotions", "a", traceparent=TRACEPARENT)
                unsampled = await mark(http, "promotions", "b", traceparent=TRACEPARENT[:-1] + "0")
                untraced = await mark(http, "promotions", "c")
                await asyncio.sleep(0)

    assert kept.headers["x-request-id"] == "req-42.a"
    generated = made.headers["x-request-id"]
    assert generated != "two words" and len(generated) == 32
    (line,) = logs.where(logger="service.access", request_id="req-42.a")
    assert (line["method"], line["route"], line["status"]) == ("GET", "/healthz", 200)
    assert logs.where(logger="service.access", request_id=generated)
    (line,) = logs.where(logger="service.access", request_id=missing.headers["x-request-id"])
    # The route as declared: ids in paths stay out of the log.
    assert (line["route"], line["status"]) == ("/v1/events/{event_id}", 401)
    assert seen.headers["x-request-id"] == "seen-1"
    (line,) = logs.where(logger="service.access", request_id="seen-1")
    assert (line["route"], line["status"]) == ("/v1/seen", 401)
    assert request_line(logs, sampled)["trace_id"] == TRACE_ID
    for response in (unsampled, untraced):
        assert not logs.where(request_id=response.headers["x-request-id"])
