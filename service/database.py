"""Which PostgreSQL to use, and connection pools to it.

`DATABASE_URL` (or `database.url`) wins; otherwise an embedded PostgreSQL from the
`pgserver` package is started in a data folder, so a fresh machine needs no server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from service.config.base import ROOT, ConfigError
from service.config.core import DatabaseSettings

DEV_DATA_DIR = ROOT / ".data" / "pg-dev"
TEST_DATA_DIR = ROOT / ".data" / "pg-test"

# Every session speaks UTC so timestamps rendered into JSON payloads never depend on the
# server's TimeZone setting.
CONNECTION_OPTIONS = "-c TimeZone=UTC"
# See make_pool.
RECONNECT_TIMEOUT_S = 1.0


# How Citus words a worker it cannot reach; it reports it as internal_error (XX000).
CITUS_NODE_UNREACHABLE = (
    "failure on connection marked as essential",
    "connection to the remote node",
    "could not establish any connections to the node",
    # A worker shutting down, relayed (on its own node it is 57P01, admin_shutdown).
    "terminating connection due to administrator command",
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether this error means the database (or, on Citus, one of its nodes) is out of
    reach for now, so the request is answered 503 and nothing was written: the pool's
    timeout, a lost connection, or a Citus worker that is down."""
    if isinstance(exc, PoolTimeout | psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.errors.InternalError_) and str(exc).startswith(
        CITUS_NODE_UNREACHABLE
    )


def start_embedded(data_dir: Path, *, stop_at_exit: bool) -> str:
    """Start (or reuse) the embedded PostgreSQL in data_dir and return its URL."""
    try:
        import pgserver  # imported lazily: only development and tests use it
    except ImportError:
        # The production image has no pgserver (the `embedded` extra): there an unset
        # DATABASE_URL is a deployment mistake, said as such rather than as a traceback.
        raise ConfigError(
            "no database configured: set DATABASE_URL (or [database].url), or install "
            "the `embedded` extra (pip install 'mark-notify[embedded]') for an embedded "
            "PostgreSQL"
        ) from None

    data_dir.mkdir(parents=True, exist_ok=True)
    cleanup = "stop" if stop_at_exit else None
    server = pgserver.get_server(data_dir, cleanup_mode=cleanup)  # type: ignore[attr-defined]
    return str(server.get_uri())


def resolve_url(settings: DatabaseSettings, data_dir: Path = DEV_DATA_DIR) -> str:
    if settings.url:
        return settings.url
    return start_embedded(data_dir, stop_at_exit=True)


def with_dbname(conninfo: str, dbname: str) -> str:
    """The same server (a URL or a key=value DSN) with another database."""
    return make_conninfo(conninfo, dbname=dbname)


def sqlalchemy_url(conninfo: str) -> str:
    """The same database (a URL or a key=value DSN) as a SQLAlchemy URL on psycopg 3."""
    from sqlalchemy.engine import URL

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    host = params.pop("host", None)
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        # A socket directory travels as a query parameter; SQLAlchemy's host is TCP only.
        host=None if host is None or host.startswith("/") else host,
        port=int(params.pop("port")) if "port" in params else None,
        database=params.pop("dbname", None),
        query=params | ({"host": host} if host and host.startswith("/") else {}),
    )
    return url.render_as_string(hide_password=False)


def make_pool(
    url: str, settings: DatabaseSettings, *, name: str, autocommit: bool = False
) -> AsyncConnectionPool:
    """A pool; autocommit pools are for code whose every write is one atomic statement,
    which then costs one round trip instead of three (BEGIN, statement, COMMIT)."""

    async def configure(conn: AsyncConnection[Any]) -> None:
        await conn.set_autocommit(autocommit)

    sweeping: set[asyncio.Task[None]] = set()

    async def check(conn: AsyncConnection[Any]) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            # One dead connection means a restart killed its idle siblings too. Left to
            # the pool, each would fail a later request's check in turn, each failure
            # pausing that request longer (1 s, 2 s, ...): drop them all at once.
            if not sweeping:
                task = asyncio.create_task(pool.check())
                sweeping.add(task)
                task.add_done_callback(sweeping.discard)
            raise

    pool: AsyncConnectionPool = AsyncConnectionPool(
        url,
        min_size=settings.pool_min,
        max_size=max(settings.pool_min, settings.pool_max),
        timeout=settings.acquire_timeout.total_seconds(),
        kwargs={
            "options": CONNECTION_OPTIONS,
            "connect_timeout": max(1, int(settings.connect_timeout.total_seconds())),
            "application_name": name,
        },
        configure=configure,
        # After a PostgreSQL restart every idle connection is dead: checked as it is
        # handed out (one empty round trip), a dead one is replaced instead of failing
        # the caller's statement (a failed completion means a duplicate delivery).
        check=check,
        # The pool retries a failed connect with a doubling delay until this runs out and
        # only then lets a new request start a fresh one: short, so that after an outage
        # the first request reconnects at once rather than after a grown delay.
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        open=False,
        name=name,
    )
    return pool
