"""`bin/dev`: the whole service on one machine, under one supervisor.

Picks the config and the database as the ops commands do (service/ops_database.py:
MARK_NOTIFY_CONFIG, else config/mark-notify.toml, else config/example.toml; DATABASE_URL,
else the config's, else an embedded PostgreSQL in .data/pg-dev), says which database (so
bin/sql, psql or any client can be pointed at it), migrates it to head, then runs the
API (uvicorn, one worker per core) and the dispatcher as child processes. Ctrl-C (or
SIGTERM) stops them all; a child that dies takes the rest down, so a half-running service
never hides behind a healthy-looking terminal.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from service import migrate
from service.config import ROOT, ConfigError, load_config
from service.database import start_embedded
from service.metrics import MULTIPROC_ENV
from service.notify.templates import load_templates
from service.ops_database import config_path, dev_data_dir, display_url

STOP_GRACE_S = 10.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


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
    migrate.upgrade(url)
    _say(f"schema at {migrate.head_revision()}")

    # The children read the same config file and database as this process.
    env = os.environ | {"DATABASE_URL": url, "MARK_NOTIFY_CONFIG": str(config_file)}
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
        # Local stand-ins for SMTP, SMS/push providers and seen consumers, so the example
        # configuration delivers somewhere (service/devpeers.py).
        "peers": [python, "-m", "service.devpeers"],
    }
    children: list[Child] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
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
    if config.dispatcher.metrics_port:
        exporter = f"http://{config.dispatcher.metrics_host}:{config.dispatcher.metrics_port}"
        _say(f"metrics    {base_url}/metrics  dispatcher {exporter}/metrics")
    _say("peers      SMTP 127.0.0.1:8025, providers and consumers http://127.0.0.1:8001")
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
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{child.name} did not stop in {STOP_GRACE_S:.0f}s; killing it")
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    lock.close()
    _say("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
