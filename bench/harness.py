"""Shared plumbing for the benchmarks: a database, real service processes, tokens, tables.

Everything runs on loopback on this machine: PostgreSQL (DATABASE_URL, else the embedded
one in .data/pg-bench), the API under uvicorn, the dispatcher, and the load generator,
each in its own process so their CPU and memory can be told apart.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.sql import bq
from service import migrate
from service.config.base import ROOT
from service.database import start_embedded, with_dbname
from tests.support import free_port

BENCH_DATA_DIR = ROOT / ".data" / "pg-bench"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
WEBHOOK_SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="
PYTHON = sys.executable
# uvicorn's HTTP protocol, as production runs it (Dockerfile, bin/dev): httptools with
# a bound on the request head (service/http_limits.py).
BOUNDED_HTTP = "service.http_limits:BoundedHttpToolsProtocol"


def server_url() -> str:
    return os.environ.get("DATABASE_URL") or start_embedded(BENCH_DATA_DIR, stop_at_exit=True)


def fresh_database(server: str, label: str) -> str:
    """A new database at schema head (see scratch_database to have it dropped after)."""
    name = f"mn_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL(bq("create_database")).format(name=sql.Identifier(name)))
    url = with_dbname(server, name)
    migrate.upgrade(url)
    return url


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(bq("bench_counts"))
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return {col.name: int(v) for col, v in zip(cur.description, row, strict=True)}


def tokens_file(directory: Path, users: int = 1000) -> Path:
    now = int(time.time())
    path = directory / "tokens.txt"
    path.write_text(
        "\n".join(
            jwt.encode(
                {
                    "kind": "client",
                    "sub": f"user-{n}",
                    "aud": "mark-notify",
                    "iss": "bench",
                    "iat": now,
                    "exp": now + 3600,
                },
                JWT_SECRET,
                algorithm="HS256",
            )
            for n in range(users)
        )
    )
    return path


def write_config(directory: Path, consumers: str = "", pool_max: int = 16) -> Path:
    """A TOML config for the services under test; consumers is extra TOML."""
    path = directory / "bench.toml"
    path.write_text(
        f"""
environment = "test"
[database]
pool_max = {pool_max}
[identity.jwt]
secret = "{JWT_SECRET}"
audience = "mark-notify"
issuer = "bench"
{consumers or _DEFAULT_CONSUMER}
[tags.promotions]
consumer = "promotions"
event_type = "client"
remember_for = "P1D"
"""
    )
    return path


_DEFAULT_CONSUMER = f"""
[consumers.promotions]
transport = "http"
url = "http://127.0.0.1:9/unused"
secret = "{WEBHOOK_SECRET}"
"""


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str

    def rss_mb(self) -> float:
        """Resident memory of the process and its children (uvicorn workers), in MB."""
        try:
            proc = psutil.Process(self.process.pid)
            procs = [proc, *proc.children(recursive=True)]
            return max(p.memory_info().rss for p in procs) / 2**20
        except psutil.NoSuchProcess:
            return 0.0

    def cpu_s(self) -> float:
        try:
            proc = psutil.Process(self.process.pid)
            total = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
            return total
        except psutil.NoSuchProcess:
            return 0.0


@contextmanager
def run_api(
    config: Path,
    db_url: str,
    *,
    app: str = "service.asgi:app",
    workers: int = 2,
    http: str = BOUNDED_HTTP,
    log: Path | None = None,
) -> Iterator[Service]:
    """`log`: a file for its output (request lines, warnings) instead of ours."""
    port = free_port()
    output = open(log, "ab") if log else None
    env = os.environ | {"DATABASE_URL": db_url, "MARK_NOTIFY_CONFIG": str(config)}
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--http",
            http,
            "--no-access-log",
            "--no-proxy-headers",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=output,
    )
    service = Service(process, f"http://127.0.0.1:{port}")
    try:
        wait_http(f"{service.url}/readyz", process)
        yield service
    finally:
        stop(process)
        if output is not None:
            output.close()


@contextmanager
def run_process(argv: list[str], env: dict[str, str]) -> Iterator[Service]:
    process = subprocess.Popen(argv, cwd=ROOT, env=os.environ | env)
    try:
        yield Service(process, "")
    finally:
        stop(process)


def wait_http(url: str, process: subprocess.Popen[bytes], budget_s: float = 60) -> None:
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {budget_s}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def loadgen(
    url: str,
    tokens: Path,
    *,
    connections: int,
    duration: float,
    rate: float = 0,
    prefix: str = "bench",
    keep_receipts: bool = False,
) -> dict[str, Any]:
    argv = loadgen_argv(
        url,
        tokens,
        connections=connections,
        duration=duration,
        rate=rate,
        prefix=prefix,
        keep_receipts=keep_receipts,
    )
    out = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return loadgen_result(out)


def loadgen_result(out: str) -> dict[str, Any]:
    """The load generator's report: the last line it printed."""
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def loadgen_argv(
    url: str,
    tokens: Path,
    *,
    connections: int,
    duration: float,
    rate: float = 0,
    prefix: str = "bench",
    keep_receipts: bool = False,
    keep_samples: bool = False,
) -> list[str]:
    """The command line of bench.loadgen against url's POST /v1/seen."""
    argv = [
        PYTHON,
        "-m",
        "bench.loadgen",
        "--url",
        f"{url}/v1/seen",
        "--tokens",
        str(tokens),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--prefix",
        prefix,
    ]
    if rate:
        argv += ["--rate", str(rate)]
    if keep_receipts:
        argv.append("--keep-receipts")
    if keep_samples:
        argv.append("--keep-samples")
    return argv


def tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="mn-bench-")


@dataclass
class Figure:
    """One measured quantity over several runs: the median with its min-max."""

    name: str
    unit: str
    values: list[float]

    def cell(self) -> str:
        if not self.values:
            return "-"
        med = statistics.median(self.values)
        if len(self.values) == 1:
            return f"{med:,.1f}"
        return f"{med:,.1f} ({min(self.values):,.1f}-{max(self.values):,.1f})"


def print_table(title: str, rows: Sequence[tuple[str, Sequence[Figure]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("variant")
    header = rows[0][1] if rows else []
    for fig in header:
        table.add_column(f"{fig.name} [{fig.unit}]", justify="right")
    for name, figures in rows:
        table.add_row(name, *(f.cell() for f in figures))
    # Wide enough for eight median (min-max) columns without wrapping a cell.
    Console(width=200).print(table)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


Check = Callable[[], None]


@contextmanager
def scratch_database(server: str, label: str) -> Iterator[str]:
    url = fresh_database(server, label)
    try:
        yield url
    finally:
        drop_database(server, url)


def drop_database(server: str, url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL(bq("drop_database")).format(name=sql.Identifier(str(name))))
