"""Interleaved slices: several API trees up at once, the load generator turning between
them in short slices, so that on a busy machine all of them see the same drift.

Each server is NAME=DIR:MODULE:APP[:HTTP], DIR a checkout (e.g. a `git worktree` of an
older commit) whose code and migrations it runs, on a fresh database of its own; HTTP is
uvicorn's --http (default httptools; `bounded` for service.http_limits). Every round
gives each server one slice, in an order rotated by one each round. Printed: req/s, the
per-round ratio to the yardstick server and to the first one, and the CPU per answered
request of the API workers and of the database's backends serving that server (CPU time
does not depend on what else runs, so it is the firmest figure on a shared machine).

    git worktree add /tmp/mn-old d1e3c3a
    .venv/bin/python -m bench.interleave --rounds 16 old=/tmp/mn-old:service.asgi:app \\
        new=.:service.asgi:app ceiling=.:bench.ceiling:app
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from bench.harness import (
    BOUNDED_HTTP,
    PYTHON,
    drop_database,
    loadgen,
    server_url,
    stop,
    tempdir,
    tokens_file,
    wait_http,
    write_config,
)
from bench.sql import bq
from tests.support import free_port


@dataclass
class Server:
    name: str
    tree: Path
    app: str
    http: str
    url: str = ""
    pid: int = 0
    dbname: str | None = None
    rps: list[float] = field(default_factory=list)
    api_us: list[float] = field(default_factory=list)
    db_us: list[float] = field(default_factory=list)


def parse_server(spec: str) -> Server:
    name, _, rest = spec.partition("=")
    parts = rest.split(":")
    if not name or len(parts) not in (3, 4):
        raise SystemExit(f"expected NAME=DIR:MODULE:APP[:HTTP], got {spec!r}")
    http = parts[3] if len(parts) == 4 else "httptools"
    return Server(
        name,
        Path(parts[0]).resolve(),
        f"{parts[1]}:{parts[2]}",
        BOUNDED_HTTP if http == "bounded" else http,
    )


def tree_database(server: str, tree: Path) -> tuple[str, str]:
    """A fresh database migrated by `tree`'s own code (older trees have older schemas)."""
    name = f"mn_bench_interleave_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL(bq("create_database")).format(name=sql.Identifier(name)))
    code = (
        "import sys; from service import migrate; from service.database import with_dbname; "
        "u = with_dbname(sys.argv[1], sys.argv[2]); migrate.upgrade(u); print(u)"
    )
    out = subprocess.run(
        [PYTHON, "-c", code, server, name], cwd=tree, check=True, capture_output=True, text=True
    ).stdout
    return out.strip().splitlines()[-1], name


@contextmanager
def started(s: Server, database_url: str, config: Path) -> Iterator[None]:
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", s.app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "2", "--http", s.http, "--no-access-log", "--no-proxy-headers"]
    argv += ["--log-level", "warning"]
    env = os.environ | {"DATABASE_URL": database_url, "MARK_NOTIFY_CONFIG": str(config)}
    process = subprocess.Popen(argv, cwd=s.tree, env=env, stderr=subprocess.DEVNULL)
    try:
        s.url, s.pid = f"http://127.0.0.1:{port}", process.pid
        wait_http(f"{s.url}/readyz", process)
        yield
    finally:
        stop(process)


def backends_cpu(server: str, dbname: str | None) -> float:
    """CPU seconds of the PostgreSQL backends connected to dbname (on this machine)."""
    if dbname is None:
        return 0.0
    with psycopg.connect(server, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(bq("backend_pids"), {"dbname": dbname})]
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system
    return total


def quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.3f}-{q[2]:.3f}"


def report(servers: list[Server], yardstick: Server) -> None:
    first = servers[0]
    print("\nreq/s median (min-max); per-round ratios: median (q1-q3)")
    for s in servers:
        to_y = [a / b for a, b in zip(s.rps, yardstick.rps, strict=True) if b]
        to_first = [a / b for a, b in zip(s.rps, first.rps, strict=True) if b]
        print(
            f"{s.name:>16}: {statistics.median(s.rps):>9,.0f} ({min(s.rps):,.0f}-"
            f"{max(s.rps):,.0f})  / {yardstick.name} {statistics.median(to_y):.3f} "
            f"({quartiles(to_y)})  / {first.name} {statistics.median(to_first):.3f} "
            f"({quartiles(to_first)})"
        )
    print("\nCPU per answered request, µs, median: API workers, database backends")
    for s in servers:
        print(
            f"{s.name:>16}: API {statistics.median(s.api_us):6.1f}  "
            f"database {statistics.median(s.db_us):6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--slice", type=float, default=3.0, help="seconds of load per slice")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--yardstick", default="ceiling", help="server the ratios divide by")
    parser.add_argument("servers", nargs="+", metavar="NAME=DIR:MODULE:APP[:HTTP]")
    args = parser.parse_args()
    servers = [parse_server(spec) for spec in args.servers]
    by_name = {s.name: s for s in servers}
    yardstick = by_name.get(args.yardstick, servers[0])
    db_server = server_url()
    with tempdir() as tmp, ExitStack() as stack:
        tokens = tokens_file(Path(tmp))
        config = write_config(Path(tmp))
        for s in servers:
            database_url = db_server
            if "ceiling" not in s.app:
                database_url, s.dbname = tree_database(db_server, s.tree)
                stack.callback(drop_database, db_server, database_url)
            stack.enter_context(started(s, database_url, config))
        for s in servers:
            loadgen(s.url, tokens, connections=args.connections, duration=2, prefix="warm")
        for n in range(args.rounds):
            shift = n % len(servers)
            line = []
            for s in servers[shift:] + servers[:shift]:
                api0, db0 = _api_cpu(s.pid), backends_cpu(db_server, s.dbname)
                result = loadgen(
                    s.url,
                    tokens,
                    connections=args.connections,
                    duration=args.slice,
                    prefix=f"r{n}-{s.name}",
                )
                api1, db1 = _api_cpu(s.pid), backends_cpu(db_server, s.dbname)
                answered = max(1, int(result["ok"]))
                s.rps.append(float(result["rps"]))
                s.api_us.append(1e6 * (api1 - api0) / answered)
                s.db_us.append(1e6 * (db1 - db0) / answered)
                line.append(f"{s.name}={result['rps']:,.0f}")
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"round {n + 1}: {' '.join(line)} load={load}", flush=True)
    report(servers, yardstick)


def _api_cpu(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


if __name__ == "__main__":
    main()
