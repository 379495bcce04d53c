"""W3C traceparent parsing and propagation, and the JSON log line format."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from service.logs import REDACTED, JsonFormatter, TextFormatter, request_id_from, scrub
from service.tracing import (
    TraceContext,
    attempt_trace,
    intake_trace,
    new_trace,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_is_read() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, SPAN, "01")
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == TraceContext(TRACE, SPAN, "00")
    # Optional whitespace around a header value.
    assert parse_traceparent(f" {VALID}\t") == TraceContext(TRACE, SPAN, "01")


def test_a_later_version_is_read_as_version_00() -> None:
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01") == TraceContext(TRACE, SPAN, "01")
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-comes-later") == TraceContext(
        TRACE, SPAN, "01"
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        VALID.upper(),
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"cc-{TRACE}-{SPAN}-01extra",
        f"00-{TRACE}-{SPAN}-1",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        f"00-{TRACE}-{SPAN[:-1]}x-01",
        f"00-{TRACE}-{SPAN}-0z",
        f"0-{TRACE}-{SPAN}-01x",
    ],
)
def test_an_invalid_traceparent_is_none(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_intake_continues_a_valid_trace_and_starts_one_otherwise() -> None:
    child = intake_trace(VALID)
    assert child.trace_id == TRACE and child.flags == "01"
    assert child.span_id != SPAN and len(child.span_id) == 16
    assert parse_traceparent(child.traceparent) == child
    fresh = intake_trace(f"00-{'0' * 32}-{SPAN}-01")
    assert fresh.trace_id != "0" * 32 and parse_traceparent(fresh.traceparent) == fresh
    assert new_trace().trace_id != new_trace().trace_id


def test_each_attempt_is_a_new_span_of_the_stored_trace() -> None:
    stored = intake_trace(VALID).traceparent
    first, second = attempt_trace(stored, "x"), attempt_trace(stored, "x")
    assert first.trace_id == second.trace_id == TRACE
    assert first.span_id != second.span_id


def test_a_row_without_a_trace_gets_one_from_its_event_id() -> None:
    event_id = "0190d8a2-7c1e-7b3a-9f00-0123456789ab"
    first, again = attempt_trace(None, event_id), attempt_trace("bad", event_id)
    assert first.trace_id == again.trace_id == "0190d8a27c1e7b3a9f000123456789ab"
    assert first.span_id != again.span_id
    assert len(attempt_trace(None, "not-a-uuid").trace_id) == 32


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("mark.test", logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_log_line_is_one_json_object_with_the_record_s_fields() -> None:
    line = JsonFormatter("api").format(
        record("POST %s %d", "/v1/seen", 200, route="/v1/seen", status=200, duration_ms=1.5)
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "INFO"
    assert parsed["logger"] == "mark.test"
    assert parsed["message"] == "POST /v1/seen 200"
    assert parsed["service"] == "api"
    assert (parsed["route"], parsed["status"], parsed["duration_ms"]) == ("/v1/seen", 200, 1.5)
    assert parsed["ts"].endswith("Z") and parsed["ts"][10] == "T"


def test_an_exception_goes_in_the_line_scrubbed() -> None:
    try:
        raise ValueError("could not mail someone@example.com")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(rec))
    assert "ValueError" in parsed["exc"]
    assert "someone@example.com" not in parsed["exc"]


def test_secret_fields_and_secret_shaped_text_are_redacted() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVz"
    api_key = "mn_0123abcd_" + "A" * 43
    rec = record(
        "from %s with %s",
        "Bearer abc.def",
        api_key,
        email="a@b.example",
        push_token="device-token-1",
        headers={"Authorization": "Bearer x", "webhook-signature": "v1,abc", "accept": "*/*"},
        error=f"HTTP 400: bad number +44 20 7946 0958 for {jwt}",
        devices=[{"token": "t"}],
        password="hunter2",
    )
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(rec)
        for secret in ("abc.def", api_key, "a@b.example", "device-token-1", "Bearer x"):
            assert secret not in text
        for secret in ("v1,abc", "+44 20 7946 0958", jwt, "hunter2", '"t"'):
            assert secret not in text
        assert REDACTED in text
    parsed = json.loads(JsonFormatter().format(rec))
    assert parsed["headers"]["accept"] == "*/*"
    assert parsed["email"] == REDACTED
    assert scrub("whsec_dGVzdA== and v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=") == (
        f"{REDACTED} and {REDACTED}"
    )


def test_a_request_id_is_kept_only_when_well_formed() -> None:
    assert request_id_from("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "two words", "line\nbreak", "x" * 129):
        made = request_id_from(bad)
        assert made != bad and len(made) == 32
