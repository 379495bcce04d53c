"""Prometheus metrics of the API, and the exposition both processes serve.

The API runs as several uvicorn workers, each its own process with its own counters,
and a scrape reaches one of them. prometheus-client's multiprocess mode makes the one
that answers speak for all: when `PROMETHEUS_MULTIPROC_DIR` is set (bin/dev sets it for
the API; set it wherever the API runs with more than one worker), every worker keeps its
values in memory-mapped files there, and `GET /metrics` sums the files of every worker,
live or gone. A worker's update is an in-process write to its own file, about a
microsecond, with no lock shared between workers. The directory must be empty when the
API starts (stale files would be summed in) and must not be shared with the dispatcher,
which is one process and serves its own registry (dispatcher/metrics.py). The API has
counters and histograms only: gauges of the database's state would be exported once
per worker, so the dispatcher exports those.

Without the variable (one worker, tests) the same metrics live in `API_REGISTRY`.
Metrics the dispatcher serves but code under service/ updates (schedule runs) are made
here unregistered, and registered by the dispatcher's exporter.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
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
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx; "
    "aborted: the client left before the answer).",
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
SCHEDULE_RUNS = Counter(
    PREFIX + "schedule_runs",
    "Schedule runs made, by schedule and outcome (sent, duplicate, failed).",
    ["schedule", "outcome"],
    registry=None,
)

# labels() costs a few microseconds (a lock and a tuple check); the hot path looks its
# children up here instead.
_requests: dict[tuple[str, str, int], Any] = {}
_durations: dict[tuple[str, str], Any] = {}
_marks: dict[tuple[str, str], Any] = {}


def status_class(status: int | None) -> str:
    return "aborted" if status is None else f"{status // 100}xx"


def observe_request(method: str, route: str, status: int | None, started: float) -> None:
    """Count one answered request; `started` is its time.perf_counter() on arrival."""
    elapsed = time.perf_counter() - started
    if method not in METHODS:
        method = "other"  # any token is a method to HTTP: one label for the odd ones
    counter = _requests.get((method, route, status or 0))
    if counter is None:
        counter = HTTP_REQUESTS.labels(method, route, status_class(status))
        _requests[(method, route, status or 0)] = counter
    counter.inc()
    histogram = _durations.get((method, route))
    if histogram is None:
        histogram = _durations[(method, route)] = HTTP_DURATION.labels(method, route)
    histogram.observe(elapsed)


async def measure(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Serve a request through a Starlette app and count it under its route template
    (`unmatched` when no route took it: raw paths would make a series per URL)."""
    started = time.perf_counter()
    status: int | None = None

    async def send_and_note(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, send_and_note)
    finally:
        route = route_template(scope) or "unmatched"
        observe_request(scope["method"], route, status, started)


def count_seen(results: Sequence[Any]) -> None:
    """Count the marks of one answered request (SeenResults: .tag and .status)."""
    if len(results) == 1:
        tallies: Any = (((results[0].tag, results[0].status), 1),)
    else:
        tallies = Tally((r.tag, r.status) for r in results).items()
    for key, n in tallies:
        counter = _marks.get(key)
        if counter is None:
            counter = _marks[key] = SEEN_MARKS.labels(*key)
        counter.inc(n)


def observe_commit(requests: int, marks: int) -> None:
    COMMIT_REQUESTS.observe(requests)
    COMMIT_MARKS.observe(marks)


def count_event(event_type: str, created: bool) -> None:
    EVENTS.labels(event_type, "created" if created else "repeat").inc()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def api_exposition() -> bytes:
    """The API's metrics in the text format: every worker's, in multiprocess mode."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(API_REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_stopped() -> None:
    """At a worker's exit: drop its live gauges' files (it has none today; a gauge added
    later must not outlive its process). Its counters stay: they are part of the totals."""
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
