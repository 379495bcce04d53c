"""Test helpers: a test config, tokens, and a real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import jwt
import psycopg
import uvicorn
from psycopg import sql
from starlette.types import ASGIApp

from service.config.load import Config, parse_config
from service.database import with_dbname

JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
AUDIENCE = "mark-notify"
ISSUER = "auth.test"
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5"


def config_data(database_url: str, **overrides: Any) -> dict[str, Any]:
    """A config for tests as the dict a TOML file would give (tests tweak it first)."""
    data: dict[str, Any] = {
        "environment": "test",
        "database": {"url": database_url, "pool_min": 1, "pool_max": 8, "acquire_timeout": 2},
        "api": {"max_body_bytes": 4096, "max_batch": 100, "retry_after_s": 3},
        "identity": {
            "jwt": {
                "algorithms": ["HS256"],
                "secret": JWT_SECRET,
                "audience": AUDIENCE,
                "issuer": ISSUER,
            },
            "gateway": {"enabled": False, "trusted_peers": ["127.0.0.1/32"]},
        },
        "consumers": {
            "promotions": {
                "transport": "http",
                "url": "http://127.0.0.1:9/seen",
                "secret": WEBHOOK_SECRET,
            },
            "goals": {
                "transport": "http",
                "url": "http://127.0.0.1:9/seen",
                "secret": WEBHOOK_SECRET,
            },
            "banners": {
                "transport": "http",
                "url": "http://127.0.0.1:9/seen",
                "secret": WEBHOOK_SECRET,
            },
        },
        "tags": {
            "promotions": {"consumer": "promotions", "event_type": "client", "remember_for": 86400},
            "cashback": {"consumer": "promotions", "event_type": "client", "remember_for": 86400},
            "personal-goals": {"consumer": "goals", "event_type": "driver", "remember_for": 3600},
            "banners": {"consumer": "banners", "event_type": "anonymous", "remember_for": 600},
            "notifications": {"event_type": "client", "remember_for": 86400},
        },
        # CI's PostgreSQL has pg_cron: under "auto" every dispatcher would give pg_cron jobs
        # to its throwaway database. The scheduler's tests choose their backend themselves.
        "scheduler": {"backend": "procrastinate"},
        # No metrics port unless a test asks for one: many dispatchers run side by side.
        # Short bucket leases: dispatchers that join or stop rebalance within a second.
        "dispatcher": {"metrics_port": 0, "bucket_lease": 3},
    } | notify_data()
    for key, value in overrides.items():
        data[key] = value
    return data


PROVIDER_SECRET = "whsec_dGVzdC1wcm92aWRlci1zZWNyZXQtMDEyMzQ1Njc4OQ=="
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret-0123456789abcdef"
# The tests' VAPID key pair ([notify.webpush]); the public key is what pages subscribe with.
VAPID_PRIVATE_KEY = "X0Ojircgrnu5X0EXWdGE_qJaTBHwy0LD_CHKibxqPhM"
VAPID_PUBLIC_KEY = (
    "BMQYeL3OOQ8BTrExMFHtYFhjC_7Q7sqimhd-cHNS-eoh6HjG1-hURZFu8lnH7H5ru7P3pxhBJ8ZS-CD0C6GwJNI"
)
VAPID_SUBJECT = "mailto:ops@test.example"
FAST_RETRY: dict[str, Any] = {
    "timeout": 2,
    "backoff": {"initial": 0.05, "factor": 2.0, "cap": 0.4},
    "breaker": {"failures": 50, "cooldown": 0.2},
}


def provider(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "url": url, "secret": PROVIDER_SECRET}


def notify_data(
    *,
    smtp_port: int = 9,
    providers_url: str = "http://127.0.0.1:9",
    public_url: str = "http://127.0.0.1:9",
) -> dict[str, Any]:
    """The notification half of a test config: the example's channels, categories and
    event types (whose templates are config/templates/), with test-sized timings and
    these peers: an SMTP server and a base URL serving /providers/<name>."""
    channels: dict[str, Any] = {
        "email": {
            "kind": "email",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "sender": "Notify <n@test.example>"},
        }
        | FAST_RETRY,
        "inbox": {"kind": "inbox", "transport": "inbox"} | FAST_RETRY,
    }
    for kind in ("sms", "push"):
        channels[kind] = {
            "kind": kind,
            "transport": "provider",
            "providers": [
                provider(f"{kind}-primary", f"{providers_url}/providers/{kind}-primary"),
                provider(f"{kind}-fallback", f"{providers_url}/providers/{kind}-fallback"),
            ],
        } | FAST_RETRY
    return {
        "notify": {
            "public_url": public_url,
            "unsubscribe_secret": UNSUBSCRIBE_SECRET,
            "seen_tag": "notifications",
            # No webpush channel unless a test adds one (tests/push_service.py); the API's
            # subscription routes are on.
            "webpush": {"vapid_private_key": VAPID_PRIVATE_KEY, "vapid_subject": VAPID_SUBJECT},
        },
        "channels": channels,
        "categories": {
            "content": {"defaults": {"email": True, "push": True, "inbox": True, "sms": False}},
            "social": {"defaults": {"email": False}},
            "account": {"transactional": True},
            "billing": {"transactional": True},
        },
        "event_types": {
            "new_episode": {"category": "content", "channels": ["push", "inbox", "email"]},
            "registration_confirmation": {
                "category": "account",
                "channels": ["email"],
                "priority": "high",
            },
            "payment_receipt": {
                "category": "billing",
                "channels": ["push", "inbox", "email"],
                "priority": "high",
                "escalation": {"channel": "sms", "after": 600},
            },
            "comment_likes": {
                "category": "social",
                "channels": ["push", "inbox"],
                "mode": "digest",
                "digest": {
                    "key": "comment_id",
                    "actor": "actor",
                    "window": "sliding",
                    "quiet": "PT5M",
                    "max_wait": "PT1H",
                    "max_items": 50,
                    "show_actors": 2,
                },
            },
            # The admin panel's one-off mailings (config/templates/announcement/).
            "announcement": {"category": "content", "channels": ["email", "push", "inbox"]},
        },
    }


def make_config(database_url: str, **overrides: Any) -> Config:
    return parse_config(config_data(database_url, **overrides), "test-config")


def token(claims: dict[str, Any], *, secret: str = JWT_SECRET, ttl: int = 300) -> str:
    now = int(time.time())
    body = {"aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + ttl}
    return jwt.encode(body | claims, secret, algorithm="HS256")


def client_token(user_id: str = "user-1", **extra: Any) -> str:
    return token({"kind": "client", "sub": user_id} | extra)


def driver_token(db_id: str = "park-1", uuid: str = "driver-1") -> str:
    return token({"kind": "driver", "db_id": db_id, "uuid": uuid})


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Run an ASGI app under a real uvicorn on a free loopback port; yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", lifespan="on", access_log=False, proxy_headers=False
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextmanager
def scratch_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """A new database on the test server, dropped afterwards; yields its URL.

    Empty (no migrations), or a copy of `template` (e.g. the `template_db` fixture).
    """
    name = f"mn_scratch_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield with_dbname(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def seen_counts(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int, int]:
    """(seen_marks, outbox, procrastinate_jobs) row counts."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM seen_marks), (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM procrastinate_jobs)"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def add_pg_partman(url: str) -> bool:
    """pg_partman in this database, in schema partman, where the server has it (as CI's
    PostgreSQL 15 does); whether it is there now."""
    with psycopg.connect(url, autocommit=True) as conn:
        available = "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'"
        if not conn.execute(available).fetchone():
            return False
        conn.execute("CREATE SCHEMA IF NOT EXISTS partman")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
    return True


async def all_buckets(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Every bucket (subject_bucket()), for a claim made outside a dispatcher's leases."""
    cur = await conn.execute("SELECT array_agg(b) FROM generate_series(0, bucket_count() - 1) b")
    row = await cur.fetchone()
    assert row is not None
    return list(row[0])


def empty_database(url: str) -> None:
    """Every row of the schema's tables gone (the schema stays): a Citus database stands in
    for a fresh copy of the template this way: the distributed tables' rows deleted, the
    others truncated, one TRUNCATE per kind (Citus takes no distributed and plain table in
    one statement), and only the day partitions a new database would not have dropped."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT c.relname FROM pg_class AS c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')"
            # buckets holds the same rows in every database the migrations make.
            " AND NOT c.relispartition AND c.relname NOT IN ('alembic_version', 'buckets')"
            " ORDER BY c.relname"
        ).fetchall()
        citus = conn.execute("SELECT to_regclass('pg_catalog.pg_dist_partition')").fetchone()
        placed: dict[str, str] = {}
        if citus and citus[0]:
            placed = dict(
                conn.execute(
                    "SELECT logicalrelid::regclass::text, partmethod::text FROM pg_dist_partition"
                ).fetchall()
            )
        kinds: dict[str, list[str]] = {}
        for (table,) in tables:
            kinds.setdefault(placed.get(table, "local"), []).append(table)
        for placement, names in kinds.items():
            if placement == "h":
                # A distributed table's TRUNCATE is one per shard and day: seconds, where
                # deleting a test's few rows takes milliseconds.
                for name in names:
                    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(name)))
                continue
            conn.execute(
                sql.SQL("TRUNCATE {} CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(n) for n in names)
                )
            )
        # Days a test made outside the week maintain_partitions() keeps go; that week stays.
        days = conn.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent IN ('outbox'::regclass, 'delivery_attempts'::regclass)"
            " AND CASE WHEN c.relname ~ '_p[0-9]{4}_[0-9]{2}_[0-9]{2}$'"
            " THEN to_date(right(c.relname, 10), 'YYYY_MM_DD')"
            " NOT BETWEEN (now() AT TIME ZONE 'UTC')::date"
            " AND (now() AT TIME ZONE 'UTC')::date + 7 END"
        ).fetchall()
        for (day,) in days:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(day)))
        conn.execute("SELECT maintain_partitions()")


@asynccontextmanager
async def coordinator_plans(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[list[str]]:
    """The plan of every statement the connection runs meanwhile, nested ones (PL/pgSQL's)
    included, as the Citus coordinator made it: auto_explain sends each as a notice."""
    plans: list[str] = []

    def keep(notice: psycopg.errors.Diagnostic) -> None:
        if notice.message_primary and "plan:" in notice.message_primary:
            plans.append(notice.message_primary)

    for statement in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = 'notice'",
        # The coordinator's own plan says where a statement runs; asking the workers for
        # theirs fails inside PL/pgSQL ("cache lookup failed for type").
        "SET citus.explain_distributed_queries = off",
    ):
        await conn.execute(statement)
    conn.add_notice_handler(keep)
    try:
        yield plans
    finally:
        conn.remove_notice_handler(keep)
        await conn.execute("SET auto_explain.log_min_duration = -1")


def not_pushed_down(plans: list[str], statement: str) -> list[str]:
    """The plans of `statement` (the start of its text) that Citus does not run on the
    workers as it stands: an INSERT ... SELECT whose rows go through the coordinator or
    are repartitioned among the workers ("INSERT/SELECT method: ..."), or a part worked
    out first and its result sent to the workers ("Distributed Subplan")."""
    found = [p for p in plans if f"Query Text: {statement}" in " ".join(p.split())]
    assert found, f"no plan of {statement!r}"
    moved = ("INSERT/SELECT method", "Distributed Subplan")
    return [p for p in found if any(m in p for m in moved) or "Citus Adaptive" not in p]
