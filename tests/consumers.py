"""Test peers for the dispatcher: a recording webhook consumer, marks, a running dispatcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatcher.startup import start_up
from dispatcher.worker import Dispatcher
from service.config.load import Config, parse_config
from service.identity import caller_for
from service.notify.templates import load_templates
from service.seen.store import MarkRow, record_marks
from service.wire import AnonymousSubject, ClientSubject, DriverSubject, Subject
from tests.support import WEBHOOK_SECRET, config_data


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    webhook_id: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    verified: bool
    at: float  # time.monotonic() on arrival


Reply = tuple[int, dict[str, str]]
Handler = Callable[[Received], Awaitable[Reply]]


async def accept(received: Received) -> Reply:
    return 200, {}


@dataclass
class RecordingConsumer:
    """A webhook consumer that verifies signatures, records every request and deduplicates
    by webhook-id the way the contract asks consumers to."""

    handler: Handler = accept
    secret: str = WEBHOOK_SECRET
    requests: list[Received] = field(default_factory=list)
    # webhook-id -> body of the first request answered 2xx; a later 2xx is a duplicate.
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    accept_order: list[str] = field(default_factory=list)
    # Every request with the status it got, in the order the answers were given.
    answered: list[tuple[Received, int]] = field(default_factory=list)
    duplicates: int = 0
    # Released on teardown, so handlers that hang do not hold up the server's exit.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        received = Received(
            path=request.url.path,
            webhook_id=headers.get("webhook-id", ""),
            body=msgspec.json.decode(raw),
            raw=raw,
            headers=headers,
            verified=verified,
            at=time.monotonic(),
        )
        self.requests.append(received)
        status, reply_headers = await self.handler(received)
        self.answered.append((received, status))
        if 200 <= status < 300:
            if received.webhook_id in self.accepted:
                self.duplicates += 1
            else:
                self.accepted[received.webhook_id] = received.body
                self.accept_order.append(received.webhook_id)
        return Response(b"{}" if status < 300 else b"nope", status, reply_headers)

    async def hang(self) -> None:
        """For handlers: block until teardown (the dispatcher's timeout ends it first)."""
        await self.release.wait()


def client(user_id: str) -> Subject:
    return ClientSubject(user_id=user_id, uid=f"uid-{user_id}", bound_uids=["b1"], phone_id="p1")


def driver(db_id: str, uuid: str) -> Subject:
    return DriverSubject(db_id=db_id, uuid=uuid)


async def add_marks(
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    tag: str,
    marks: Sequence[tuple[Subject, str]],
) -> None:
    """Write seen marks (subject, item id) through the real write-path statement."""
    rows = []
    for subject, item_id in marks:
        caller = caller_for(subject)
        key = caller.key if not isinstance(subject, AnonymousSubject) else f"anon:{item_id}"
        rows.append(
            MarkRow(
                tag=tag,
                item_id=item_id,
                subject_key=key,
                subject_kind=caller.kind,
                subject=subject,
                consumer=consumer,
                remember_for_s=3600.0,
            )
        )
    await record_marks(conn, rows)


# A wait's bound is a net for a hung test, not a claim about speed: a test that means a
# latency asserts the seconds wait_until returns. Two full suites side by side on two cores
# make a 10 s wait take 30, so no bound is shorter than this.
MIN_PATIENCE_S = 60.0


def patience(within: float) -> float:
    """The bound a wait really gets: `within`, but never under MIN_PATIENCE_S."""
    return max(within, MIN_PATIENCE_S)


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, step: float = 0.05
) -> float:
    """Poll `check` until true; the seconds it took. Fails the test after patience(within)."""
    start = time.monotonic()
    bound = patience(within)
    while not await check():
        if time.monotonic() - start > bound:
            raise AssertionError(f"timed out after {bound} s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - start


async def scalar(conn: psycopg.AsyncConnection[Any], query: Any, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def outbox_status(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT status, count(*) FROM outbox GROUP BY status")
    return {status: count for status, count in await cur.fetchall()}


@asynccontextmanager
async def running(
    config: Config, db_url: str, *, name: str = "test-dispatcher"
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in this event loop, stopped (gracefully) on exit."""
    templates = load_templates(config)
    dispatcher = Dispatcher(config, db_url, name=name, templates=templates)
    task = asyncio.create_task(dispatcher.run(start_up(config, db_url, templates, name=name)))
    ready = asyncio.create_task(dispatcher.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 30)


def http_consumer(url: str, **overrides: Any) -> dict[str, Any]:
    """A consumer entry for config_data, with test-sized timings."""
    return {
        "transport": "http",
        "url": url,
        "secret": WEBHOOK_SECRET,
        "timeout": 2,
        "backoff": {"initial": 0.05, "factor": 2.0, "cap": 0.4},
        "breaker": {"failures": 50, "cooldown": 0.2},
    } | overrides


def dispatch_config(
    db_url: str,
    consumers: dict[str, dict[str, Any]],
    *,
    tags: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> Config:
    """The test config with only these consumers, and the standard tags that map to them."""
    data = config_data(db_url, consumers=consumers, **overrides)
    data["tags"] = {
        name: tag
        for name, tag in data["tags"].items()
        if "consumer" not in tag or tag["consumer"] in consumers
    } | (tags or {})
    return parse_config(data, "test-config")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for a test config: scalars, lists of scalars and nested tables."""

    def key(k: str) -> str:
        return k if all(c.isalnum() or c in "_-" for c in k) else msgspec.json.encode(k).decode()

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return msgspec.json.encode(v).decode()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):  # inside a list: an inline table
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {v!r} as TOML")

    scalars = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    text = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(s + "\n" for s in scalars)
    for k, v in data.items():
        if isinstance(v, dict):
            text += to_toml(v, f"{prefix}.{key(k)}" if prefix else key(k))
    return text
