"""`bin/dev`'s stand-ins for the world outside: an SMTP server, SMS and push providers and
seen-mark consumers on loopback, so the example configuration delivers somewhere real.

    python -m service.devpeers        (bin/dev starts it; config from MARK_NOTIFY_CONFIG)

- SMTP on the email channel's host and port: every message is accepted and summarised
  on stdout (subject and size; never the address).
- HTTP on the port of the example's provider and consumer URLs (8001): requests to
  `/providers/<name>` are checked against that provider's signing secret and answered 200;
  anything else POSTed (seen-mark webhooks) is checked against the consumer's secret whose
  URL it matches and answered 204.
It is development tooling only: production points these URLs at real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import functools
import json
import signal
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Config, ConfigError, load_config


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops all its servers on one
    signal, handled by serve()."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _say(message: str) -> None:
    print(f"[dev peers] {message}", flush=True)


class MailSink:
    """aiosmtpd handler: accept everything, say what arrived."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received += 1
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        _say(f"email #{self.received}: {message['subject']!r} ({len(raw)} bytes)")
        return "250 OK"


def secrets_by_path(config: Config, port: int) -> dict[str, tuple[str, str]]:
    """URL path -> (who, signing secret) for every provider and consumer on this port."""
    found: dict[str, tuple[str, str]] = {}
    for channel in config.channels.values():
        for provider in channel.providers:
            parts = urlsplit(provider.url)
            if parts.port == port:
                found[parts.path] = (f"{channel.kind} provider {provider.name}", provider.secret)
    for name, consumer in config.consumers.items():
        if consumer.url and consumer.secret and urlsplit(consumer.url).port == port:
            found[urlsplit(consumer.url).path] = (f"consumer {name}", consumer.secret)
    return found


def _describe(body: bytes) -> str:
    """What a delivery says, in a few words: a seen mark's event type, tag and id (never
    a contact: provider requests are only counted in bytes)."""
    try:
        event = json.loads(body)
    except ValueError:
        event = None
    if isinstance(event, dict) and {"event_type", "tag", "id"} <= event.keys():
        return f"{event['event_type']} saw {event['tag']}/{event['id']}"
    return f"{len(body)} bytes"


def http_app(routes: dict[str, tuple[str, str]]) -> Starlette:
    async def receive(request: Request) -> Response:
        known = routes.get(request.url.path)
        if known is None:
            return Response(b"unknown path", 404)
        who, secret = known
        body = await request.body()
        try:
            Webhook(secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            _say(f"{who}: signature did not verify, answered 401")
            return Response(b"bad signature", 401)
        _say(f"{who}: {_describe(body)}, signature verified ({request.headers.get('webhook-id')})")
        return Response(b"{}", 200, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])


async def serve(config: Config) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.AbstractServer] = []
    smtp_channels = [c.smtp for c in config.channels.values() if c.smtp is not None]
    for smtp in {(s.host, s.port) for s in smtp_channels}:
        sink = MailSink()
        servers.append(await loop.create_server(functools.partial(SMTP, sink), *smtp))
        _say(f"SMTP on {smtp[0]}:{smtp[1]}")
    ports = {
        urlsplit(url).port
        for url in [p.url for c in config.channels.values() for p in c.providers]
        + [c.url for c in config.consumers.values() if c.url]
        if urlsplit(url).hostname in ("127.0.0.1", "localhost")
    }
    http: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    for port in sorted(p for p in ports if p):
        server = _Server(
            uvicorn.Config(
                http_app(secrets_by_path(config, port)),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
            )
        )
        http.append((server, asyncio.create_task(server.serve())))
        _say(f"providers and consumers on http://127.0.0.1:{port}")
    await stop.wait()
    for running, _ in http:
        running.should_exit = True
    await asyncio.gather(*(task for _, task in http), return_exceptions=True)
    for smtp_server in servers:
        smtp_server.close()


def main() -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"dev peers: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
