"""A Server-Sent Events client for tests: reads GET /v1/inbox/stream as a browser's
EventSource would, message by message (event, id, data), over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.consumers import patience


@dataclass(frozen=True)
class Message:
    event: str
    id: str | None
    data: Any


class EventStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry_ms: int | None = None
        self.comments = 0
        self._lines = response.aiter_lines()

    async def next(self, within: float = 10.0) -> Message:
        """The next message; fails the test if none comes within patience(within)."""
        return await asyncio.wait_for(self._read(), patience(within))

    async def _read(self) -> Message:
        event, id_ = "message", None
        data: list[str] = []
        async for line in self._lines:
            if line == "":
                if data:
                    return Message(event, id_, json.loads("\n".join(data)))
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "id":
                id_ = value
            elif field == "data":
                data.append(value)
            elif field == "retry":
                self.retry_ms = int(value)
        raise EOFError("the stream ended")


async def stream_token(api: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await api.post("/v1/inbox/stream-token", headers=headers)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@asynccontextmanager
async def open_stream(
    api: httpx.AsyncClient, token: str, last_event_id: str | None = None
) -> AsyncIterator[EventStream]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with api.stream(
        "GET", "/v1/inbox/stream", params={"token": token}, headers=headers
    ) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)
