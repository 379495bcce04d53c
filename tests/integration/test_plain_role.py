"""The scheduler's start-up as a login role that is not a superuser (docs/deployment.md),
on a server that preloads pg_cron (CI's PostgreSQL 15), where such a role may not even read
cron.database_name: "procrastinate" never asks pg_cron, "auto" falls back and says why,
"pg_cron" refuses to start naming the grants, and with them it runs."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from service import migrate
from service.config.base import ROOT
from service.database import with_dbname
from service.schedule import backend
from tests.consumers import running
from tests.notify_api import running_api
from tests.plain_role import PlainRole, cron_database, drop_role, grant_pg_cron, plain_role
from tests.schedules import api_config, bin_schedules, make, newsletter, schedule_data
from tests.schedules import write_config as write

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def role(pg_server_url: str) -> Iterator[PlainRole]:
    with plain_role(pg_server_url) as made:
        yield made


@pytest.fixture
def cron_db(pg_server_url: str) -> str:
    """pg_cron's database; these tests need a server that preloads pg_cron."""
    found = cron_database(pg_server_url)
    if found is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("CI runs the pg_cron tests, but pg_cron is not preloaded")
        pytest.skip("pg_cron is not preloaded on this server")
    return found


def config(role: PlainRole, name: str) -> dict[str, Any]:
    data = schedule_data(role.url, backend=name)
    data["schedules"] = {"weekly-newsletter": newsletter()}
    return data


def dispatcher(config_file: Path, url: str) -> subprocess.CompletedProcess[str]:
    """A dispatcher process, which exits at once when its start-up fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARK_NOTIFY")}
    env |= {"MARK_NOTIFY_CONFIG": str(config_file), "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_procrastinate_runs_as_a_plain_role_without_asking_pg_cron(
    role: PlainRole, tmp_path: Path
) -> None:
    data = config(role, "procrastinate")
    async with running(make(data), role.url):
        async with await psycopg.AsyncConnection.connect(role.url, autocommit=True) as conn:
            state = await backend.current_state(conn)
    assert state is not None
    assert (state.backend, state.detail) == (
        "procrastinate",
        "configured ([scheduler].backend = procrastinate)",
    )
    async with running_api(role.url, **api_config(data)) as api:
        ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["scheduler"]["backend"] == "procrastinate"
    status = bin_schedules(role.url, write(tmp_path / "c.toml", data), "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("backend: procrastinate (configured")
    assert "pg_cron jobs" not in status.stdout


async def test_auto_falls_back_to_procrastinate_as_a_plain_role_and_says_why(
    role: PlainRole, pg_server_url: str, tmp_path: Path
) -> None:
    data = config(role, "auto")
    async with running(make(data), role.url):
        async with await psycopg.AsyncConnection.connect(role.url, autocommit=True) as conn:
            state = await backend.current_state(conn)
    assert state is not None and state.backend == "procrastinate"
    if cron_database(pg_server_url) is None:
        assert state.detail == "auto: pg_cron is not preloaded (shared_preload_libraries)"
    else:
        assert state.detail.startswith(
            f"auto: pg_cron is preloaded and role {role.name!r} may not read cron.database_name;"
        )
        assert f"GRANT pg_read_all_settings TO {role.name};" in state.detail
    async with running_api(role.url, **api_config(data)) as api:
        ready = (await api.get("/readyz")).json()
    assert ready["scheduler"] == {"backend": "procrastinate", "detail": state.detail}
    status = bin_schedules(role.url, write(tmp_path / "c.toml", data), "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"backend: procrastinate ({state.detail}); chosen by ")


async def test_pg_cron_refuses_to_start_as_a_plain_role_naming_the_grants_then_runs_with_them(
    role: PlainRole, cron_db: str, tmp_path: Path
) -> None:
    file = write(tmp_path / "c.toml", config(role, "pg_cron"))
    grants = (
        f"GRANT pg_read_all_settings TO {role.name}; and in database {cron_db!r}: "
        f"GRANT USAGE ON SCHEMA cron TO {role.name}; GRANT EXECUTE ON FUNCTION "
        f"cron.schedule_in_database(text, text, text, text, text, boolean) TO {role.name}"
    )
    ran = dispatcher(file, role.url)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.startswith(
        f"mark-notify dispatcher: [scheduler].backend is pg_cron, but pg_cron is preloaded and "
        f"role {role.name!r} may not read cron.database_name;"
    ), ran.stderr
    assert "GRANT pg_read_all_settings" in ran.stderr and "Traceback" not in ran.stderr

    # Settings readable, cron's schema still closed: the rest of the grants are named.
    grant_pg_cron(role, cron=False)
    with pytest.raises(backend.SchedulerUnavailable) as refused:
        await backend.sync(role.url, make(config(role, "pg_cron")), chosen_by="test")
    assert str(refused.value).startswith(
        f"[scheduler].backend is pg_cron, but role {role.name!r} lacks USAGE on schema cron "
        f"and EXECUTE on cron.schedule_in_database() in pg_cron's database {cron_db!r};"
    )
    assert grants in str(refused.value)

    # With every grant the docs name, the role keeps its own jobs, and removes them again.
    grant_pg_cron(role)
    report = await backend.sync(role.url, make(config(role, "pg_cron")), chosen_by="test")
    assert report.backend == "pg_cron"
    prefix = f"mark-notify:{role.name}:"
    assert sorted(report.scheduled) == [
        prefix + "digests",
        prefix + "retention",
        prefix + "schedule:weekly-newsletter",
    ]
    async with await psycopg.AsyncConnection.connect(
        with_dbname(role.admin_url, cron_db), autocommit=True
    ) as cron:
        cur = await cron.execute(
            "SELECT DISTINCT username FROM cron.job WHERE jobname LIKE %s", [prefix + "%"]
        )
        assert await cur.fetchall() == [(role.name,)]
    status = bin_schedules(role.url, file, "status")
    assert status.returncode == 0, status.stderr
    assert f"{prefix}schedule:weekly-newsletter " in status.stdout
    switched = await backend.sync(role.url, make(config(role, "procrastinate")), chosen_by="t")
    assert switched.backend == "procrastinate"
    assert sorted(switched.unscheduled) == sorted(report.scheduled)


async def test_the_compose_init_script_gives_its_role_what_pg_cron_needs(
    pg_server_url: str, cron_db: str, tmp_path: Path
) -> None:
    """config/postgres/20-app-role.sh, run as the image's entrypoint runs it, for a role
    and database of this test's own: that role migrates its database and gets pg_cron."""
    if shutil.which("psql") is None:
        pytest.skip("no psql here to run the script with")
    name = f"mn_app_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(18)
    script = tmp_path / "20-app-role.sh"
    text = (ROOT / "config" / "postgres" / "20-app-role.sh").read_text()
    script.write_text(text.replace("mark_notify", name))
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    server = conninfo_to_dict(pg_server_url)
    role = PlainRole(
        name=name,
        url=make_conninfo(pg_server_url, user=name, password=password, dbname=name),
        admin_url=pg_server_url,
    )
    try:
        ran = await asyncio.to_thread(
            subprocess.run,
            ["sh", str(script)],
            env=os.environ
            | {
                "PGHOST": str(server.get("host") or "127.0.0.1"),
                "PGPORT": str(server.get("port") or 5432),
                "PGPASSWORD": str(server.get("password") or ""),
                # Compose's database is pg_cron's too; here pg_cron keeps its jobs elsewhere.
                "POSTGRES_USER": str(server.get("user") or "postgres"),
                "POSTGRES_DB": cron_db,
                "MARK_NOTIFY_DB_PASSWORD": password,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        migrate.upgrade(role.url)
        report = await backend.sync(role.url, make(config(role, "auto")), chosen_by="test")
        assert report.backend == "pg_cron"
        assert report.detail.startswith("auto: pg_cron 1.")
        assert report.detail.endswith(f", jobs in database {cron_db!r}")
    finally:
        drop_role(role)
