"""Real processes to break: a private PostgreSQL, the API under uvicorn and dispatchers.

The test session's PostgreSQL is shared by every test and must never be stopped, so the
tests that restart or stop a database get a private server of their own: the embedded
build's binaries (pgserver's, PostgreSQL 16) on a free loopback port and a data folder in
/tmp. As root, PostgreSQL runs as the `pgserver` system user pgserver already creates.
The API and the dispatchers run as subprocesses, so a test can SIGKILL them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from service.config.base import ROOT
from tests.support import free_port

PG_START_S = 30.0


def _pg_bin() -> Path:
    import pgserver._commands

    return Path(pgserver._commands.POSTGRES_BIN_PATH)


class PrivatePostgres:
    """A PostgreSQL server of its own on 127.0.0.1:<port>: start, stop (fast or
    immediate, i.e. a crash), restart; removed on close()."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mn-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            self._user = "pgserver"
            try:
                pwd.getpwnam(self._user)
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/sh", self._user], check=True)
            entry = pwd.getpwnam(self._user)
            self.dir.chmod(0o755)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> int:
        result = subprocess.run(
            [str(_pg_bin() / tool), *args],
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=check,
            cwd=self.dir,
        )
        return result.returncode

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "start")
        deadline = time.monotonic() + PG_START_S
        while not self.accepting():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private PostgreSQL did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def accepting(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def service_env(config_file: Path, database_url: str, **extra: str) -> dict[str, str]:
    """This environment without MARK_NOTIFY_* settings, pointed at a config and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARK_NOTIFY")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env | {"MARK_NOTIFY_CONFIG": str(config_file), "DATABASE_URL": database_url} | extra


class Process:
    """A service process (API or dispatcher) started, killed and started again with the
    same command; its output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 10.0) -> None:
        self.signal(signal.SIGTERM)
        if self.process is not None and self.wait(grace_s) is None:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def api_process(env: dict[str, str], port: int, log: Path, workers: int = 1) -> Process:
    """The API as bin/dev runs it (service/dev/server.py), on one loopback port."""
    argv = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
    argv += ["--no-proxy-headers", "--timeout-graceful-shutdown", "2"]
    argv += ["--http", "service.http_limits:BoundedHttpToolsProtocol"]
    return Process("api", argv, env, log)


def dispatcher_process(env: dict[str, str], name: str, log: Path) -> Process:
    argv = [sys.executable, "-m", "dispatcher.main", "--name", name]
    return Process(f"dispatcher {name}", argv, env, log)


def wait_ready(base_url: str, within: float = 30.0, process: Process | None = None) -> None:
    """Until GET /readyz answers 200."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process is not None and not process.running:
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    tail = process.log_tail() if process else ""
    raise RuntimeError(f"{base_url} not ready within {within} s\n{tail}")


def wait_log(process: Process, text: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in process.log_tail(400):
            return True
        time.sleep(0.05)
    return False


def no_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """A dispatcher section with no metrics port, so several dispatchers can run."""
    return data | {"metrics_port": 0}
