"""Shared fixtures: a real PostgreSQL, and a fresh migrated database per test.

The server is `DATABASE_URL` when set (CI: Debian's PostgreSQL 15), else the embedded
PostgreSQL 16 from pgserver in .data/pg-test. The schema is migrated once into a template
database; each test gets its own copy of it (CREATE DATABASE ... TEMPLATE), made and
dropped by pytest-postgresql's DatabaseJanitor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pytest_postgresql.janitor import DatabaseJanitor

from service import migrate
from service.database import TEST_DATA_DIR, start_embedded, with_dbname
from tests.support import add_pg_partman, empty_database

TEMPLATE = f"mn_template_{os.getpid()}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-cron-tick",
        action="store_true",
        help="also run the tests that wait for pg_cron's next minute tick (.ci/run does)",
    )
    parser.addoption(
        "--citus",
        action="store_true",
        help="run only the tests marked citus, on the Citus cluster at CITUS_URL (.ci/run does)",
    )
    parser.addoption(
        "--chaos",
        action="store_true",
        help="also run the faults-under-load tests, about 5 minutes (.ci/run does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = []
    if not config.getoption("--pg-cron-tick"):
        reason = "waits for pg_cron's minute tick: run with --pg-cron-tick"
        skips.append(("pg_cron_tick", pytest.mark.skip(reason=reason)))
    if not config.getoption("--chaos"):
        skips.append(("chaos", pytest.mark.skip(reason="faults under load: run with --chaos")))
    cluster = config.getoption("--citus")
    if cluster and not os.environ.get("CITUS_URL"):
        raise pytest.UsageError("--citus needs CITUS_URL: the coordinator's database")
    not_cluster = pytest.mark.skip(reason="not a cluster test: --citus runs those marked citus")
    for item in items:
        if cluster and ("citus" not in item.keywords or "single_server" in item.keywords):
            item.add_marker(not_cluster)
            continue
        for keyword, skip in skips:
            if keyword in item.keywords:
                item.add_marker(skip)


def _server_url() -> str:
    return os.environ.get("DATABASE_URL") or start_embedded(TEST_DATA_DIR, stop_at_exit=True)


def _janitor(url: str, dbname: str, **kwargs: Any) -> DatabaseJanitor:
    params = conninfo_to_dict(url)
    return DatabaseJanitor(
        user=str(params.get("user") or "postgres"),
        host=str(params.get("host") or "127.0.0.1"),
        port=str(params.get("port") or 5432),
        password=str(params["password"]) if params.get("password") else None,
        dbname=dbname,
        maintenance_dbname=str(params.get("dbname") or "postgres"),
        **kwargs,
    )


@pytest.fixture
def embedded_tmp_path() -> Iterator[Path]:
    """A scratch folder for an embedded PostgreSQL's data, outside pytest's basetemp.

    As root, pgserver opens the folders above its data to its own user (o+rx), and every
    pytest session that starts resets /tmp/pytest-of-root to 0700: with a second suite
    beside this one, initdb would be locked out of tmp_path mid-way."""
    path = Path(tempfile.mkdtemp(prefix="mn-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The maintenance database of the test server."""
    return _server_url()


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    janitor = _janitor(pg_server_url, TEMPLATE, as_template=False)
    janitor.init()
    template = with_dbname(pg_server_url, TEMPLATE)
    # Where the server has pg_partman (CI's PostgreSQL 15), every test runs with it keeping
    # the day partitions, as a production database with it would; elsewhere (the embedded
    # PostgreSQL 16) with the built-in maintainer.
    add_pg_partman(template)
    migrate.upgrade(template)
    yield TEMPLATE
    janitor.drop()


@pytest.fixture(scope="session")
def citus_url() -> str:
    """The Citus coordinator's database (CITUS_URL), migrated once in the cluster mode."""
    url = os.environ["CITUS_URL"]
    migrate.upgrade(url, mode="citus")
    return url


@pytest.fixture
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database at schema head, for this test only; with --citus the cluster's
    one database, emptied (a Citus database cannot be copied from a template)."""
    if request.config.getoption("--citus"):
        url = request.getfixturevalue("citus_url")
        empty_database(url)
        yield url
        return
    pg_server_url = request.getfixturevalue("pg_server_url")
    template_db = request.getfixturevalue("template_db")
    name = f"mn_test_{uuid.uuid4().hex[:12]}"
    janitor = _janitor(pg_server_url, name, template_dbname=template_db)
    janitor.init()
    try:
        yield with_dbname(pg_server_url, name)
    finally:
        janitor.drop()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    """An autocommit connection to the test database, for arranging and asserting."""
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()
