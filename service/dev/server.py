"""`bin/dev`: the whole service on one machine, under one supervisor.

Picks the config and the database as the ops commands do (service/ops/database_target.py:
MARK_NOTIFY_CONFIG, else config/mark-notify.toml, else config/example.toml; DATABASE_URL,
else the config's, else an embedded PostgreSQL in .data/pg-dev), says which database (so
bin/sql, psql or any client can be pointed at it), migrates it to head, then runs the
API (uvicorn, one worker per core) and the dispatcher as child processes, with stand-ins
for the config's loopback peers (service/dev/peers.py: SMTP, HTTP providers and consumers,
a Kafka broker) wherever their ports are free; MARK_NOTIFY_DEV_PEERS=0 runs none. The API
serves the inbox element's demo page at /dev/inbox (service/dev/demo_page.py). A
loopback [notify].public_url becomes this API's own address, so mailed links lead here. Ctrl-C
(or SIGTERM) stops them all; a child that dies takes the rest down, so a half-running
service never hides behind a healthy-looking terminal.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from service import migrate
from service.config.base import ROOT, ConfigError
from service.config.load import load_config
from service.database import start_embedded
from service.dev import peers as devpeers
from service.metrics import MULTIPROC_ENV
from service.notify.templates import load_templates
from service.ops.database_target import config_path, dev_data_dir, display_url

STOP_GRACE_S = 10.0
KAFKA_START_S = 10.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    # Tansu goes on serving open connections for seconds after SIGTERM; its memory storage
    # has nothing to keep, so it is killed.
    stop_signal: int = signal.SIGTERM


def _say(message: str) -> None:
    print(f"[bin/dev] {message}", flush=True)


def acquire_lock(path: Path, url: str) -> IO[str]:
    """One bin/dev per checkout: a second one says who is running instead of colliding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise SystemExit(
            f"[bin/dev] already running: {owner}. Stop it first (Ctrl-C there)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} serving {url}\n")
    handle.flush()
    return handle


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def stop_children(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(child.stop_signal)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{child.name} did not stop in {STOP_GRACE_S:.0f}s; killing it")
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def say_peers(plan: devpeers.Plan, mail_dir: Path) -> None:
    """Which stand-ins run, and which of the config's peers are someone else's."""
    for peer in plan.run:
        extra = {"SMTP": f"; mail kept in {mail_dir}/", "Kafka": "; Tansu, memory storage"}
        note = extra.get(peer.kind, "")
        _say(f"stand-in   {peer.kind} {peer.address} for {', '.join(peer.serves)}{note}")
    for peer in plan.found:
        _say(
            f"found      {peer.kind} {peer.address} already listening: no stand-in, "
            f"{', '.join(peer.serves)} deliver there"
        )
    if plan.off:
        shown = ", ".join(f"{p.kind} {p.address}" for p in plan.off)
        _say(f"stand-ins  off (MARK_NOTIFY_DEV_PEERS=0): nothing runs on {shown}")


def _accepting(address: devpeers.Address) -> bool:
    try:
        with socket.create_connection((address.host, address.port), timeout=0.2):
            return True
    except OSError:
        return False


def start_kafka(address: devpeers.Address, binary: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """Tansu on the address, accepting connections when this returns (else RuntimeError)."""
    url = f"tcp://{address}"
    command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
    command += ["--storage-engine", "memory://tansu/"]
    # A clean environment: tansu reads LISTENER_URL, STORAGE_ENGINE etc. from it.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "error"}
    # Its start-up banner says nothing bin/dev does not; errors go to stderr.
    process = subprocess.Popen(  # noqa: S603 (our own fixed argv)
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + KAFKA_START_S
    while not _accepting(address):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"tansu did not start on {address}")
        time.sleep(0.02)
    return process


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    workers = int(os.environ.get("WEB_CONCURRENCY", default_workers()))
    base_url = f"http://{host}:{port}"
    data_dir = dev_data_dir()
    lock = acquire_lock(data_dir.parent / f"dev-{port}.lock", base_url)

    config_file = config_path()
    try:
        config = load_config(config_file)
        load_templates(config)  # a broken template: say so here, not from a child
    except ConfigError as exc:
        _say(f"bad config: {exc}")
        return 2
    _say(f"config     {config_file}")
    if config.database.url:
        url = config.database.url
        where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "the config"
    else:
        where = f"embedded PostgreSQL in {data_dir}"
        url = start_embedded(data_dir, stop_at_exit=True)
    _say(f"database   {display_url(url)}  ({where}; bin/sql opens a SQL shell on it)")
    migrate.upgrade(url, mode=config.database.mode)
    _say(f"schema at {migrate.head_revision()}")

    # The children read the same config file and database as this process.
    env = os.environ | {"DATABASE_URL": url, "MARK_NOTIFY_CONFIG": str(config_file)}
    mail_dir = data_dir.parent / "mail"
    plan = devpeers.plan(
        config,
        enabled=os.environ.get("MARK_NOTIFY_DEV_PEERS", "1") != "0",
        tansu=devpeers.tansu_binary(),
    )
    children: list[Child] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    workdir = Path(tempfile.mkdtemp(prefix="mark-notify-dev-"))
    no_broker, why = plan.no_broker, plan.no_broker_why
    if broker := next((p for p in plan.run if p.kind == "Kafka"), None):
        binary = devpeers.tansu_binary()
        assert binary is not None  # plan() runs no Kafka stand-in without it
        try:
            tansu = start_kafka(broker.address, binary, workdir)
        except RuntimeError as exc:
            plan.run.remove(broker)
            no_broker, why = tuple(w.removeprefix("consumer ") for w in broker.serves), str(exc)
        else:
            children.append(Child("kafka", tansu, stop_signal=signal.SIGKILL))
    if any(p.kind == "Kafka" for p in plan.run + plan.found):
        # A loopback broker here may well be Tansu (ours, or another bin/dev's), which
        # refuses the idempotent producer's handshake.
        env.setdefault("MARK_NOTIFY__kafka__enable_idempotence", "false")
    if devpeers.is_loopback(host) and devpeers.is_loopback(
        urlsplit(config.notify.public_url).hostname
    ):
        # The links it mails (unsubscribe, preference center) lead to this API, on
        # whichever PORT it runs.
        env.setdefault("MARK_NOTIFY__notify__public_url", base_url)
    for name in no_broker:
        # Rather than an ERROR per attempt for days: the consumer is off in this run, and
        # its marks wait in the outbox for a run with a broker.
        env[f"MARK_NOTIFY__consumers__{name}__enabled"] = "false"
    # A person reads this terminal: log lines as text, unless JSON is asked for.
    env.setdefault("MARK_NOTIFY_LOG_FORMAT", "text")
    # and every POST /v1/seen, which production samples (docs/observability.md).
    env.setdefault("MARK_NOTIFY_SEEN_ACCESS_LOG_RATE", "1")
    # The API's workers add up their metrics through files in a directory of their own
    # (service/metrics.py): a new one each run, as an old run's files would be summed in.
    metrics_dir = tempfile.mkdtemp(prefix="mark-notify-metrics-")
    env.pop(MULTIPROC_ENV, None)
    envs = {"api": env | {MULTIPROC_ENV: metrics_dir}}
    python = sys.executable
    commands = {
        "api": [
            python,
            "-m",
            "uvicorn",
            "service.asgi:app",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            # The gateway trust check reads the direct peer; letting uvicorn rewrite it from
            # X-Forwarded-For would let any local caller claim a trusted address.
            "--no-proxy-headers",
            # httptools has no bound on a request's head of its own (service/http_limits.py).
            "--http",
            "service.http_limits:BoundedHttpToolsProtocol",
            "--timeout-graceful-shutdown",
            "5",
        ],
        "dispatcher": [python, "-m", "dispatcher.main"],
    }
    # Local stand-ins for SMTP, SMS/push providers, seen consumers and Kafka, so the
    # example configuration delivers somewhere (service/dev/peers.py).
    # They start first, so the first deliveries find them.
    if peer_args := [f"--{p.kind.lower()}={p.address}" for p in plan.run]:
        peers = [python, "-m", "service.dev.peers", *peer_args, f"--mail-dir={mail_dir}"]
        commands = {"peers": peers} | commands
    for name, command in commands.items():
        if name == "dispatcher" and not (ROOT / "dispatcher" / "main.py").exists():
            continue
        # Children get their own process group so a terminal Ctrl-C reaches only us, and we
        # stop them in order.
        child_env = envs.get(name, env)
        process = subprocess.Popen(command, cwd=ROOT, env=child_env, start_new_session=True)  # noqa: S603 (our own fixed argv)
        children.append(Child(name, process))
    _say(f"API        {base_url}  (workers: {workers})")
    _say(f"OpenAPI    {base_url}/openapi.json")
    _say(f"health     {base_url}/healthz  {base_url}/readyz")
    if config.environment == "development":
        _say(f"inbox demo {base_url}/dev/inbox  (the <mark-notify-inbox> element, docs/inbox.md)")
    if config.dispatcher.metrics_port:
        exporter = f"http://{config.dispatcher.metrics_host}:{config.dispatcher.metrics_port}"
        _say(f"metrics    {base_url}/metrics  dispatcher {exporter}/metrics")
    say_peers(plan, mail_dir)
    if no_broker:
        _say(
            f"no broker  for Kafka consumer(s) {', '.join(no_broker)}: {why}; off in this "
            "run, their marks wait in the outbox for a run with a broker"
        )
    _say("Ctrl-C stops everything")

    exit_code = 0
    while not stopping:
        for child in children:
            code = child.process.poll()
            if code is not None:
                _say(f"{child.name} exited with {code}; stopping the rest")
                exit_code = code or 1
                stopping = True
                break
        time.sleep(0.2)

    _say("stopping ...")
    # The broker last: the dispatcher finishes its batches in flight, and the topic reader
    # stops, while it still answers.
    stop_children([c for c in children if c.name != "kafka"])
    stop_children([c for c in children if c.name == "kafka"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    lock.close()
    _say("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
