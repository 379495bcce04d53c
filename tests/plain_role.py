"""A login role that is not a superuser, as the service runs in production
(docs/deployment.md): it owns a fresh database and migrates it itself. Made and dropped
by the test server's superuser, with whatever pg_cron grants a test gives it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from service import migrate


@dataclass(frozen=True, slots=True)
class PlainRole:
    name: str
    # Its own database, at schema head, as the role connects to it.
    url: str
    # The server's superuser, in the maintenance database.
    admin_url: str


def cron_database(admin_url: str) -> str | None:
    """pg_cron's database, if the server preloads pg_cron (asked as the superuser)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
    return row[0] if row and row[0] else None


def grant_pg_cron(role: PlainRole, *, settings: bool = True, cron: bool = True) -> None:
    """docs/deployment.md's grants for pg_cron: membership in pg_read_all_settings (to
    find pg_cron's database), USAGE on schema cron and EXECUTE on
    cron.schedule_in_database() there."""
    name = sql.Identifier(role.name)
    if settings:
        with psycopg.connect(role.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_settings TO {}").format(name))
    database = cron_database(role.admin_url)
    if cron and database:
        with psycopg.connect(make_conninfo(role.admin_url, dbname=database)) as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(name))
            conn.execute(
                sql.SQL(
                    "GRANT EXECUTE ON FUNCTION"
                    " cron.schedule_in_database(text, text, text, text, text, boolean) TO {}"
                ).format(name)
            )


@contextmanager
def plain_role(admin_url: str, *, migrated: bool = True) -> Iterator[PlainRole]:
    """A new login role owning a new database, which it has migrated (unless not
    `migrated`: the test does); both dropped after, with the role's pg_cron jobs and
    grants."""
    name = f"mn_app_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(18)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(name)
            )
        )
    role = PlainRole(
        name=name,
        url=make_conninfo(admin_url, user=name, password=password, dbname=name),
        admin_url=admin_url,
    )
    try:
        if migrated:
            migrate.upgrade(role.url)
        yield role
    finally:
        drop_role(role)


def drop_role(role: PlainRole) -> None:
    """The role, its database, its pg_cron jobs and its grants, gone."""
    name = sql.Identifier(role.name)
    database = cron_database(role.admin_url)
    if database:
        with psycopg.connect(make_conninfo(role.admin_url, dbname=database)) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
                # Jobs of a dropped role would fail every minute.
                conn.execute(
                    "SELECT cron.unschedule(jobid) FROM cron.job WHERE username = %s", [role.name]
                )
            # Its grants there (the role owns nothing in that database).
            conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
    with psycopg.connect(role.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))
