"""Test peers for the provider channels: SMS and push providers that record what they get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import PROVIDER_SECRET, serve


@dataclass(frozen=True, slots=True)
class Sent:
    provider: str
    webhook_id: str
    body: dict[str, Any]
    # Verified with this provider's secret: `Providers.secrets[name]`, else PROVIDER_SECRET.
    verified: bool
    timestamp: int
    raw: bytes
    headers: dict[str, str]


class Providers:
    """Every provider of the test config at /providers/<name> on one server: answers
    `status[name]`, else `by_token[token]` to a push for that token, else 200; hangs for
    the providers in `hanging`. Error answers quote the request, as some real
    providers' error messages do."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.status: dict[str, int] = {}
        self.by_token: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, str] = {}
        self.hanging: set[str] = set()
        self.release = asyncio.Event()

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/providers/{name}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        name = request.path_params["name"]
        raw = await request.body()
        headers = dict(request.headers)
        try:
            Webhook(self.secrets.get(name, PROVIDER_SECRET)).verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        body = msgspec.json.decode(raw)
        self.sent.append(
            Sent(
                name,
                headers["webhook-id"],
                body,
                verified,
                int(headers["webhook-timestamp"]),
                raw,
                headers,
            )
        )
        if name in self.hanging:
            await self.release.wait()
        status = self.status.get(name, 200)
        if status == 200:
            status = self.by_token.get(body.get("token"), 200)
        reply = b"{}" if status < 300 else b"rejected: " + raw
        return Response(reply, status, self.headers.get(name))

    def to(self, name: str) -> list[Sent]:
        return [s for s in self.sent if s.provider == name]


@asynccontextmanager
async def serving_providers() -> AsyncIterator[tuple[Providers, str]]:
    """Providers on a loopback port; yields them and the base URL for notify_data()."""
    peers = Providers()
    async with serve(peers.app) as base:
        try:
            yield peers, base
        finally:
            # Hanging handlers must end for the server to stop.
            peers.release.set()
