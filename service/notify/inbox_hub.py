"""One listener per API process for the live inbox: a LISTEN on the inbox channel
(service/inbox_signal.py) that wakes the open streams of the user each NOTIFY names.

A wake is a flag, not a message: a stream re-reads the change log from its position
(service/notify/inbox_stream.py), so a burst of NOTIFYs for one user costs one read, and a
NOTIFY lost while the listener was down costs nothing: back, the hub wakes the streams of
the users with changes not visible in its last probe's snapshot, which catch up from their
positions (all streams on a first connect, or if that query fails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from service.inbox_signal import LISTEN_CHANNEL
from service.metrics import count_listener_connect, count_stream
from service.sql import q

log = logging.getLogger(__name__)

# How often an idle listener proves its connection alive (a dead peer that sent no FIN
# would otherwise leave it waiting forever), and the longest pause between reconnects.
PROBE_S = 15.0
MAX_BACKOFF_S = 5.0

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class TooManyStreams(Exception):
    """This user, or this process, has as many open streams as allowed."""


@dataclass(eq=False, slots=True)
class Stream:
    user_id: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class InboxHub:
    def __init__(self, connect: Connect, spawn: Spawn) -> None:
        self._connect = connect
        # Starts the listener as a task the app cancels when it stops.
        self._spawn = spawn
        self._streams: dict[str, set[Stream]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        # Set while the LISTEN is up; `connects` counts (re)connects (tests, /metrics).
        self.listening = asyncio.Event()
        self.connects = 0
        # The snapshot by which every NOTIFY had been heard: taken at each probe of the
        # listener's connection (None until the first).
        self._heard: str | None = None
        self.closing = asyncio.Event()

    @property
    def open_streams(self) -> int:
        return self._count

    def open(self, user_id: str, *, per_user: int, max_streams: int) -> Stream:
        mine = self._streams.setdefault(user_id, set())
        if len(mine) >= per_user or self._count >= max_streams:
            if not mine:
                del self._streams[user_id]
            raise TooManyStreams
        stream = Stream(user_id)
        mine.add(stream)
        self._count += 1
        count_stream("opened")
        if self._task is None or self._task.done():
            self._task = self._spawn(self._listen())
        return stream

    def close(self, stream: Stream) -> None:
        mine = self._streams.get(stream.user_id)
        if mine is None or stream not in mine:
            return
        mine.discard(stream)
        self._count -= 1
        count_stream("closed")
        if not mine:
            del self._streams[stream.user_id]

    def server_stopping(self) -> None:
        """uvicorn is shutting down (service/http_limits.py): streams end now."""
        # Once: uvicorn tells every connection, and so calls this once per connection.
        if self.closing.is_set():
            return
        self.closing.set()
        # Woken, each stream sees `closing` and ends.
        self._wake_all()

    async def stop(self) -> None:
        """End every stream (they say goodbye) and the listener."""
        self.server_stopping()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _wake(self, user_id: str) -> None:
        for stream in self._streams.get(user_id, ()):
            stream.wake.set()

    def _wake_all(self) -> None:
        for streams in self._streams.values():
            for stream in streams:
                stream.wake.set()

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Wake the streams whose user had changes while nobody listened: those not visible
        in the last snapshot of the lost connection (all streams, failing that)."""
        heard, self._heard = self._heard, await _snapshot(conn)
        if heard is None:
            self._wake_all()
            return
        try:
            cur = await conn.execute(q("inbox_users_changed_since"), {"since": heard})
            users = [str(row[0]) for row in await cur.fetchall()]
        except psycopg.DatabaseError as exc:
            log.warning("inbox listener: catch-up query failed (%s); waking every stream", exc)
            self._wake_all()
            return
        for user_id in users:
            self._wake(user_id)

    async def _listen(self) -> None:
        backoff = 0.2
        while not self.closing.is_set():
            try:
                conn = await self._connect()
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(LISTEN_CHANNEL)))
                    self.connects += 1
                    count_listener_connect()
                    self.listening.set()
                    await self._catch_up(conn)
                    backoff = 0.2
                    while True:
                        async for notice in conn.notifies(timeout=PROBE_S):
                            self._wake(notice.payload)
                        self._heard = await _snapshot(conn)
            except (psycopg.Error, OSError) as exc:
                if self.listening.is_set():
                    log.warning("inbox listener lost its connection (%s); reconnecting", exc)
            self.listening.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


async def _snapshot(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute(q("inbox_heard"))
    row = await cur.fetchone()
    return str(row[0]) if row else ""
