"""Email throughput: the SMTP transport's reused connections against connect-per-message.

    python -m bench.email [--quick] [--messages N] [--runs R] [--concurrency C]

An SMTP server (aiosmtpd, in its own process) accepts everything, over plain SMTP and,
in a second case, with STARTTLS required (a certificate authority made for the run, as
the tests do). The same N rendered notifications (the new_episode templates, with their
unsubscribe links) are sent
  1. by dispatcher.smtp_transport.SmtpTransport, in batches as the claim loop hands
     them over, over its pool of at most C reused connections, and
  2. naively: a new aiosmtplib connection per message (connect, EHLO, MAIL, RCPT, DATA,
     QUIT), C at a time, building each message the same way,
and it prints msgs/s for both and their ratio, the median of R runs. After each variant
the server is asked how many messages and sessions it saw, so a lost message fails the
run and the connection counts show what was reused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.harness import Figure, print_table
from dispatcher.main import run
from dispatcher.smtp_transport import SmtpTransport
from dispatcher.transport_base import Delivery
from service.config.load import Config, parse_config
from service.notify.templates import load_templates
from tests.smtp_server import make_certificates

CHANNEL = "email"
SENDER = "bench <bench@bench.example>"
EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}
LOCAL_HOSTNAME = "bench.local"


# --- the SMTP server, run as `python -m bench.email --sink PORT` ----------------------------


class Sink:
    """Accepts every message. NOOP answers with what it has seen: `250 <messages> <sessions>`."""

    def __init__(self) -> None:
        self.messages = 0
        self.sessions = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return f"250 {self.messages} {self.sessions}"


async def serve_sink(port: int, certificate: str | None) -> None:
    from aiosmtpd.smtp import SMTP

    sink = Sink()
    loop = asyncio.get_running_loop()
    tls: ssl.SSLContext | None = None
    if certificate:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certificate)

    def session() -> Any:
        sink.sessions += 1
        return SMTP(
            sink, hostname="sink.bench", loop=loop, tls_context=tls, require_starttls=bool(tls)
        )

    server = await loop.create_server(session, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


@contextmanager
def smtp_sink(certificate: Path | None) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    argv = [sys.executable, "-m", "bench.email", "--sink", str(port)]
    if certificate:
        argv += ["--certificate", str(certificate)]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the SMTP sink did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def sink_counts(port: int, starttls: bool) -> tuple[int, int]:
    """(messages, sessions) the sink has seen so far; this query is a session too."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=starttls, local_hostname=LOCAL_HOSTNAME
    )
    await smtp.connect()
    try:
        reply = await smtp.noop()
    finally:
        await smtp.quit()
    messages, sessions = reply.message.split()[:2]
    return int(messages), int(sessions)


# --- the two senders ----------------------------------------------------------------------


def make_config(port: int, concurrency: int, starttls: bool = False) -> Config:
    data: dict[str, Any] = {
        "environment": "test",
        "tags": {"notifications": {"event_type": "client", "remember_for": 86400}},
        "notify": {"unsubscribe_secret": "bench-unsubscribe-secret-0123456789abcdef"},
        "channels": {
            CHANNEL: {
                "kind": "email",
                "transport": "smtp",
                "concurrency": concurrency,
                "timeout": 30,
                "smtp": {
                    "host": "127.0.0.1",
                    "port": port,
                    "sender": SENDER,
                    "starttls": starttls,
                },
            }
        },
        "categories": {"content": {}},
        "event_types": {"new_episode": {"category": "content", "channels": [CHANNEL]}},
    }
    return parse_config(data, "bench")


def deliveries(count: int) -> list[Delivery]:
    now = datetime.now(UTC)
    return [
        Delivery(
            outbox_id=n,
            event_id=str(uuid.uuid4()),
            consumer=CHANNEL,
            ordering_key=f"user-{n % 1000}",
            payload={
                "notification_id": n,
                "event_id": str(uuid.uuid4()),
                "type": "new_episode",
                "category": "content",
                "transactional": False,
                "user_id": f"user-{n % 1000}",
                "locale": "en",
                "data": EPISODE,
                "email": f"user-{n % 1000}@bench.example",
            },
            attempt=1,
            created_at=now,
        )
        for n in range(count)
    ]


def new_transport(config: Config) -> SmtpTransport:
    return SmtpTransport(
        {CHANNEL: config.channels[CHANNEL]},
        config.notify,
        load_templates(config),
        environment=config.environment,
    )


async def with_reuse(config: Config, rows: list[Delivery], batch_size: int) -> float:
    transport = new_transport(config)
    try:
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            outcomes = await transport.deliver(CHANNEL, rows[start : start + batch_size])
            failed = [o for o in outcomes if o.kind != "delivered"]
            if failed:
                raise RuntimeError(f"{len(failed)} not delivered, e.g. {failed[0].error}")
        return time.perf_counter() - started
    finally:
        await transport.close()


async def connect_per_message(config: Config, rows: list[Delivery], concurrency: int) -> float:
    # The same transport only builds the messages, so both variants do the same work
    # apart from the connections.
    builder = new_transport(config)
    smtp = config.channels[CHANNEL].smtp
    assert smtp is not None
    slots = asyncio.Semaphore(concurrency)
    # One context for the run, as the transport has one per channel.
    tls = ssl.create_default_context() if smtp.starttls else None

    async def one(row: Delivery) -> None:
        to, message = builder.message(CHANNEL, row)
        async with slots:
            await aiosmtplib.send(
                message,
                sender="bench@bench.example",
                recipients=[to],
                hostname=smtp.host,
                port=smtp.port,
                start_tls=smtp.starttls,
                tls_context=tls,
                local_hostname=LOCAL_HOSTNAME,
                timeout=30,
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(row) for row in rows))
    return time.perf_counter() - started


async def measured(
    port: int, starttls: bool, what: str, send: Any, count: int
) -> tuple[float, int]:
    """msgs/s of one variant and the sessions it opened; checks every message arrived."""
    before, sessions_before = await sink_counts(port, starttls)
    took = await send
    after, sessions_after = await sink_counts(port, starttls)
    if after - before != count:
        raise RuntimeError(f"{what}: the server got {after - before} of {count} messages")
    return count / took, sessions_after - sessions_before - 1


async def bench_case(
    args: argparse.Namespace, certificate: Path | None
) -> tuple[list[float], list[float]]:
    """msgs/s of each run, with reuse and connect per message."""
    starttls = certificate is not None
    reused: list[float] = []
    naive: list[float] = []
    with smtp_sink(certificate) as port:
        config = make_config(port, args.concurrency, starttls)
        for run_no in range(args.runs):
            rows = deliveries(args.messages)
            fast, fast_sessions = await measured(
                port, starttls, "reuse", with_reuse(config, rows, args.batch_size), len(rows)
            )
            slow, slow_sessions = await measured(
                port,
                starttls,
                "naive",
                connect_per_message(config, rows, args.concurrency),
                len(rows),
            )
            reused.append(fast)
            naive.append(slow)
            print(
                f"run {run_no + 1}/{args.runs} {'starttls' if starttls else 'plain'}: "
                f"reused connections {fast:,.0f} msgs/s ({fast_sessions} sessions), "
                f"connect per message {slow:,.0f} msgs/s ({slow_sessions} sessions)",
                flush=True,
            )
    return reused, naive


async def main_async(args: argparse.Namespace) -> None:
    rows: list[tuple[str, list[Figure]]] = []
    with tempfile.TemporaryDirectory(prefix="mn-bench-email-") as directory:
        _, ca_file = make_certificates(Path(directory))
        # Both senders trust the run's own authority, as they would a real one.
        os.environ["SSL_CERT_FILE"] = str(ca_file)
        for name, certificate in (("plain", None), ("starttls", Path(directory) / "server.pem")):
            reused, naive = await bench_case(args, certificate)
            ratios = [f / s for f, s in zip(reused, naive, strict=True) if s]
            rows.append(
                (
                    name,
                    [
                        Figure("reused connections", "msgs/s", reused),
                        Figure("connect per message", "msgs/s", naive),
                        Figure("ratio", "x", ratios),
                    ],
                )
            )
    print_table(
        f"email: {args.messages:,} messages to a local aiosmtpd, concurrency "
        f"{args.concurrency}; median (min-max) of {args.runs}",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small run (200 messages)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--certificate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run(serve_sink(args.sink, args.certificate))
        return
    if args.quick:
        args.messages, args.runs = min(args.messages, 200), 1
    run(main_async(args))  # uvloop, as dispatcher.main runs in production


if __name__ == "__main__":
    main()
