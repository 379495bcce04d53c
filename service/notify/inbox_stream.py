"""The live inbox: `GET /v1/inbox/stream`, Server-Sent Events for the signed-in user.

A browser's EventSource cannot send an Authorization header, so the page first trades its
client JWT for a stream token (`POST /v1/inbox/stream-token`: signed, single-purpose,
minutes long; service/notify/signed_tokens.py) and opens `?token=`. The token only opens
streams: it reads nothing else and writes nothing.

Each message's id is the stream's position: a PostgreSQL snapshot (plus the time it was
taken). The next read sends the user's inbox_changes rows that were not visible in it
(sql/notify/queries/inbox.sql, inbox_changes_since), together with the new items rendered
and the unseen count, as one message with one id. A reconnect sends that id back
(Last-Event-ID, or `last_event_id=` when the page opens a new EventSource) and misses
nothing and repeats nothing, whatever order the writers committed in. A position older than
[retention] inbox_changes (the change log's age) gets a `ready` with `reset`: reload the list.

Streams wait on the process's one listener (service/notify/inbox_hub.py), never on a
connection of their own; a read borrows a pool connection for two queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from service.database import CONNECTION_OPTIONS, resolve_url
from service.errors import api_error
from service.http import json_response
from service.http_limits import on_shutdown
from service.metrics import count_stream_message
from service.notify import signed_tokens
from service.notify.inbox import page_items, page_params
from service.notify.inbox_hub import InboxHub, Stream, TooManyStreams
from service.notify.notify_wire import StreamChanges, StreamReady, StreamToken
from service.notify.request_parts import client_user
from service.sql import q
from service.state import State, state_of

log = logging.getLogger(__name__)

AUDIENCE = "mark-notify:inbox-stream"
PATH = "/v1/inbox/stream"
# The browser waits this long before it reconnects a dropped stream.
RETRY_MS = 1000
# A read that failed (the database away) is tried again after this, or on a wake.
READ_RETRY_S = 1.0
# "v1." + unix time + "." + pg_snapshot text (xmin:xmax:xip,...). Bounded: a position
# with thousands of transactions in progress is not one this service gave.
MAX_POSITION_CHARS = 4096
POSITION_PATTERN = r"^v1\.(\d{1,12})\.((\d{1,20}):(\d{1,20}):((?:\d{1,20})(?:,\d{1,20})*)?)$(?!\n)"
_POSITION = re.compile(POSITION_PATTERN)

_encode = msgspec.json.Encoder().encode


class Position(msgspec.Struct, frozen=True):
    taken_at: int
    snapshot: str


def parse_position(raw: str) -> Position:
    """A Last-Event-ID this service gave, or ApiError invalid_last_event_id."""
    match = _POSITION.match(raw) if len(raw) <= MAX_POSITION_CHARS else None
    if match is None:
        raise api_error("invalid_last_event_id")
    xmin, xmax = int(match[3]), int(match[4])
    running = [int(x) for x in match[5].split(",")] if match[5] else []
    # What pg_snapshot's input checks, so a forged id is a 400, never a database error.
    if not (0 < xmin <= xmax < 2**63) or any(not xmin <= x < xmax for x in running):
        raise api_error("invalid_last_event_id")
    if running != sorted(set(running)):
        raise api_error("invalid_last_event_id")
    return Position(int(match[1]), match[2])


def format_position(snapshot: str, taken_at: float) -> str:
    return f"v1.{int(taken_at)}.{snapshot}"


def _message(event: str, position: str, body: msgspec.Struct) -> bytes:
    count_stream_message(event)
    return b"event: %s\nid: %s\ndata: %s\n\n" % (event.encode(), position.encode(), _encode(body))


def _hub(state: State) -> InboxHub:
    hub: InboxHub | None = getattr(state, "inbox_hub", None)
    if hub is None:
        database = state.config.database
        url = resolve_url(database)

        async def connect() -> psycopg.AsyncConnection[Any]:
            return await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                options=CONNECTION_OPTIONS,
                connect_timeout=max(1, int(database.connect_timeout.total_seconds())),
                application_name="mark-notify-inbox-listener",
            )

        hub = InboxHub(connect, state.in_background)
        on_shutdown(hub)
        state.inbox_hub = hub  # type: ignore[attr-defined]
    return hub


async def stream_token(request: Request) -> Response:
    user_id = client_user(request)
    state = state_of(request)
    settings = state.config.notify
    now = time.time()
    token = signed_tokens.sign(
        settings,
        AUDIENCE,
        {"sub": user_id},
        settings.inbox_stream.token_ttl,
        environment=state.config.environment,
        now=now,
    )
    expires = datetime.fromtimestamp(
        int(now + settings.inbox_stream.token_ttl.total_seconds()), UTC
    )
    return json_response(
        StreamToken(token=token, expires_at=expires, stream_url=f"{PATH}?token={token}")
    )


def _stream_user(request: Request, state: State) -> str:
    token = request.query_params.get("token")
    if not token:
        raise api_error(
            "invalid_stream_token", "Open the stream with ?token= from POST /v1/inbox/stream-token."
        )
    try:
        claims = signed_tokens.verify(
            state.config.notify, AUDIENCE, token, environment=state.config.environment
        )
        (user_id,) = signed_tokens.string_claims(claims, "sub")
    except signed_tokens.InvalidToken as exc:
        raise api_error("invalid_stream_token", f"The stream token is not valid ({exc}).") from None
    return user_id


async def _start(state: State, user_id: str) -> tuple[str, int]:
    """A new stream's position and the user's unseen count."""
    async with state.pool.connection() as conn:
        cur = await conn.execute(q("inbox_position"))
        row = await cur.fetchone()
        position = format_position(str(row[0]) if row else "", time.time())
        cur = await conn.execute(
            q("inbox_page"), page_params(state, user_id, before=None, limit=0, ids=[])
        )
        unseen, _ = page_items(state, user_id, await cur.fetchall())
    return position, unseen


async def _changes(state: State, user_id: str, since: Position) -> tuple[str, StreamChanges]:
    """What changed for the user since `since`, and the position after it."""
    taken_at = time.time()
    async with state.pool.connection() as conn:
        # One snapshot for the log and the items, so the two agree.
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            cur = await conn.execute(
                q("inbox_changes_since"), {"user_id": user_id, "since": since.snapshot}
            )
            rows = await cur.fetchall()
            new = sorted({int(r[2]) for r in rows if r[1] == "item" and r[2].isdigit()})
            params = page_params(state, user_id, before=None, limit=max(1, len(new)), ids=new)
            cur = await conn.execute(q("inbox_page"), params)
            unseen, items = page_items(state, user_id, await cur.fetchall())
        finally:
            await conn.execute("COMMIT")
    seen = list(dict.fromkeys(r[2] for r in rows if r[1] == "seen"))
    position = format_position(str(rows[0][0]), taken_at)
    return position, StreamChanges(items=items, seen=seen, unseen=unseen)


async def _events(
    state: State, hub: InboxHub, stream: Stream, since: Position | None, reset: bool
) -> AsyncIterator[bytes]:
    settings = state.config.notify.inbox_stream
    heartbeat = settings.heartbeat.total_seconds()
    ends_at = time.monotonic() + settings.max_age.total_seconds()
    seen_tag = state.config.notify.seen_tag
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        position: Position | None = since
        while not hub.closing.is_set() and time.monotonic() < ends_at:
            # Cleared before the read: a NOTIFY during the read sets it again.
            stream.wake.clear()
            try:
                if position is None:
                    text, unseen = await _start(state, stream.user_id)
                    yield _message(
                        "ready", text, StreamReady(unseen=unseen, seen_tag=seen_tag, reset=reset)
                    )
                    position = parse_position(text)
                else:
                    text, changes = await _changes(state, stream.user_id, position)
                    if changes.items or changes.seen or position is since:
                        yield _message("changes", text, changes)
                    position = parse_position(text)
                    since = None
            except (PoolTimeout, psycopg.OperationalError) as exc:
                # The database is away: the stream stays open and reads again once it is
                # back (a second later, or sooner if woken).
                log.info("inbox stream: a read failed (%s); retrying", exc)
                await _wait(stream, READ_RETRY_S)
                continue
            while not stream.wake.is_set():
                if not await _wait(stream, heartbeat):
                    if hub.closing.is_set() or time.monotonic() >= ends_at:
                        break
                    count_stream_message("ping")
                    yield b": ping\n\n"
    finally:
        hub.close(stream)


async def _wait(stream: Stream, seconds: float) -> bool:
    """Until the stream is woken (True: a NOTIFY, a reconnect of the listener, or the hub
    closing wakes it) or `seconds` pass. Only the stream's own event: no task, and no
    waiter on an event every stream shares."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stream.wake.wait()
    return stream.wake.is_set()


async def inbox_stream(request: Request) -> Response:
    state = state_of(request)
    user_id = _stream_user(request, state)
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    since = parse_position(raw) if raw else None
    reset = False
    resume_for = state.config.retention.inbox_changes.total_seconds()
    if since is not None and since.taken_at < time.time() - resume_for:
        since, reset = None, True
    settings = state.config.notify.inbox_stream
    hub = _hub(state)
    try:
        stream = hub.open(user_id, per_user=settings.per_user, max_streams=settings.max_streams)
    except TooManyStreams:
        raise api_error("too_many_streams", retry_after="5") from None
    headers = {
        "Cache-Control": "no-store",
        # Proxies that buffer (nginx) would hold the messages back.
        "X-Accel-Buffering": "no",
    }
    return _EventStream(hub, stream, _events(state, hub, stream, since, reset), headers=headers)


class _EventStream(StreamingResponse):
    """A stream that gives its place back however it ends, even if a client that hung up
    at once never let it start."""

    def __init__(
        self, hub: InboxHub, stream: Stream, body: AsyncIterator[bytes], headers: dict[str, str]
    ) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._hub = hub
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.close(self._stream)


ROUTES: list[BaseRoute] = [
    Route("/v1/inbox/stream-token", stream_token, methods=["POST"]),
    Route(PATH, inbox_stream, methods=["GET"]),
]
