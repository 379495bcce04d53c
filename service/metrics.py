"""Prometheus metrics of the API and its `GET /metrics`.

The API runs as several uvicorn workers, each its own process with its own counters,
and a scrape reaches one of them. prometheus-client's multiprocess mode makes the one
that answers speak for all: when `PROMETHEUS_MULTIPROC_DIR` is set (bin/dev sets it for
the API; set it wherever the API runs with more than one worker), every worker keeps its
values in memory-mapped files there, and `GET /metrics` sums the files of every worker,
live or gone. A worker's update is a write to its own file, with no lock shared between
workers; the request path defers even that (see flush()). The directory must be empty
when the API starts (stale files would be summed in) and must not be shared with the dispatcher,
which is one process and serves its own registry (dispatcher/dispatcher_metrics.py). The API has
counters and histograms only: gauges of the database's state would be exported once
per worker, so the dispatcher exports those.

Without the variable (one worker, tests) the same metrics live in `API_REGISTRY`.
Metrics the dispatcher serves but code under service/ updates (schedule runs) are made
here unregistered, and registered by the dispatcher's exporter.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from service.http import route_template
from service.openapi import Section

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "mark_notify_"
# The intake answers in about a millisecond; a delivery attempt up to its timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

API_REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    PREFIX + "http_requests",
    "HTTP requests answered, by method, route template and status class (2xx, 3xx, 4xx, "
    "5xx; aborted: the client left before the answer).",
    ["method", "route", "status"],
    registry=API_REGISTRY,
)
HTTP_DURATION = Histogram(
    PREFIX + "http_request_duration_seconds",
    "Time from a request's arrival to its answer, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=API_REGISTRY,
)
SEEN_MARKS = Counter(
    PREFIX + "seen_marks",
    "Seen marks answered 200, by tag and result (recorded: new; duplicate: a repeat).",
    ["tag", "result"],
    registry=API_REGISTRY,
)
COMMIT_MARKS = Histogram(
    PREFIX + "seen_commit_marks",
    "Marks written per group commit (one statement, one transaction).",
    buckets=BATCH_BUCKETS,
    registry=API_REGISTRY,
)
COMMIT_REQUESTS = Histogram(
    PREFIX + "seen_commit_requests",
    "POST /v1/seen requests sharing one group commit.",
    buckets=BATCH_BUCKETS,
    registry=API_REGISTRY,
)
EVENTS = Counter(
    PREFIX + "events",
    "Events accepted by POST /v1/events, by type and result (created; repeat: the "
    "idempotency key was known).",
    ["type", "result"],
    registry=API_REGISTRY,
)
INBOX_STREAMS = Counter(
    PREFIX + "inbox_streams",
    "Live inbox streams (GET /v1/inbox/stream) opened and closed; open now = opened - "
    "closed, summed over workers.",
    ["change"],
    registry=API_REGISTRY,
)
INBOX_STREAM_MESSAGES = Counter(
    PREFIX + "inbox_stream_messages",
    "Messages sent on live inbox streams, by event (ready, changes, ping).",
    ["event"],
    registry=API_REGISTRY,
)
INBOX_LISTENER_CONNECTS = Counter(
    PREFIX + "inbox_listener_connects",
    "(Re)connects of the API processes' inbox listeners (LISTEN): more than one per "
    "process means it lost its connection and came back.",
    registry=API_REGISTRY,
)
SCHEDULE_RUNS = Counter(
    PREFIX + "schedule_runs",
    "Schedule runs made, by schedule and outcome (sent, duplicate, failed).",
    ["schedule", "outcome"],
    registry=None,
)

# The hot path only tallies, in plain dicts of this process (well under a microsecond);
# flush() hands the tallies to prometheus-client (about a microsecond per value written,
# and a request writes four) at most FLUSH_S after they were made, and before every
# exposition, so a scrape lags a worker's requests by at most that.
FLUSH_S = 1.0
_requests: dict[tuple[str, str, int], int] = {}
# Per (method, route): [sum of durations, count per bucket..., count above the last bound].
_durations: dict[tuple[str, str], list[float]] = {}
_marks: dict[tuple[str, str], int] = {}
_flush_loop: asyncio.AbstractEventLoop | None = None


def status_class(status: int) -> str:
    return "aborted" if not status else f"{status // 100}xx"


def observe_request(
    method: str, route: str, status: int | None, started: float, *, timed: bool = True
) -> None:
    """Count one answered request; `started` is its time.perf_counter() on arrival.
    `timed` False: a stream, whose duration is its lifetime, not a latency."""
    elapsed = time.perf_counter() - started
    if method not in METHODS:
        method = "other"  # any token is a method to HTTP: one label for the odd ones
    key = (method, route, status or 0)
    _requests[key] = _requests.get(key, 0) + 1
    if not timed:
        _flush_soon()
        return
    tally = _durations.get((method, route))
    if tally is None:
        tally = _durations[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
    tally[0] += elapsed
    # A bucket counts durations up to and including its bound, as observe() does.
    tally[1 + bisect_left(LATENCY_BUCKETS, elapsed)] += 1
    _flush_soon()


def count_seen(results: Sequence[Any]) -> None:
    """Count the marks of one answered request (SeenResults: .tag and .status)."""
    for r in results:
        key = (r.tag, r.status)
        _marks[key] = _marks.get(key, 0) + 1
    _flush_soon()


def _flush_soon() -> None:
    global _flush_loop
    loop = asyncio.get_running_loop()
    # Compared with the loop, not a flag: a loop that closed with a flush pending (tests
    # run one per test) must not leave the next one without.
    if _flush_loop is not loop:
        _flush_loop = loop
        loop.call_later(FLUSH_S, flush)


def flush() -> None:
    """Write this process's tallies into its metrics (in multiprocess mode, its files)."""
    global _flush_loop
    _flush_loop = None
    requests, durations, marks = dict(_requests), dict(_durations), dict(_marks)
    _requests.clear()
    _durations.clear()
    _marks.clear()
    for (method, route, status), n in requests.items():
        HTTP_REQUESTS.labels(method, route, status_class(status)).inc(n)
    for (method, route), tally in durations.items():
        histogram = HTTP_DURATION.labels(method, route)
        # prometheus-client can only observe one value at a time: add the tallies to the
        # very values observe() increments (a sum, and one count per bucket).
        histogram._sum.inc(tally[0])
        for bucket, count in zip(histogram._buckets, tally[1:], strict=True):
            if count:
                bucket.inc(count)
    for (tag, result), n in marks.items():
        SEEN_MARKS.labels(tag, result).inc(n)


async def measure(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Serve a request through a Starlette app and count it under its route template
    (`unmatched` when no route took it: raw paths would make a series per URL)."""
    started = time.perf_counter()
    status = 0
    stream = False

    async def send_and_note(message: Message) -> None:
        nonlocal status, stream
        if message["type"] == "http.response.start":
            status = message["status"]
            stream = (b"content-type", b"text/event-stream") in {
                (k.lower(), v.split(b";")[0].strip()) for k, v in message.get("headers", ())
            }
        await send(message)

    try:
        await app(scope, receive, send_and_note)
    finally:
        route = route_template(scope) or "unmatched"
        observe_request(scope["method"], route, status, started, timed=not stream)


def observe_commit(requests: int, marks: int) -> None:
    COMMIT_REQUESTS.observe(requests)
    COMMIT_MARKS.observe(marks)


def count_stream(change: str) -> None:
    """A live inbox stream opened or closed."""
    INBOX_STREAMS.labels(change).inc()


def count_stream_message(event: str) -> None:
    INBOX_STREAM_MESSAGES.labels(event).inc()


def count_listener_connect() -> None:
    INBOX_LISTENER_CONNECTS.inc()


def count_event(event_type: str, created: bool) -> None:
    EVENTS.labels(event_type, "created" if created else "repeat").inc()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def api_exposition() -> bytes:
    """The API's metrics in the text format: every worker's, in multiprocess mode."""
    flush()
    path = multiprocess_dir()
    if path is None:
        return generate_latest(API_REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_stopped() -> None:
    """At a worker's exit: drop its live gauges' files (it has none today; a gauge added
    later must not outlive its process). Its counters stay: they are part of the totals."""
    flush()
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


async def metrics_endpoint(request: Request) -> Response:
    return Response(api_exposition(), media_type=CONTENT_TYPE_LATEST)


def _openapi_paths() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of the API (docs/observability.md)",
                "responses": {
                    "200": {"description": "The text exposition format 0.0.4", "content": text}
                },
            }
        }
    }


# /metrics is an ops endpoint like /healthz and /readyz, which the document lists too.
OPENAPI_SECTION = Section(paths=_openapi_paths, structs=())
