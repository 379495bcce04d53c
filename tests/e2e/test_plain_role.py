"""The service as docs/deployment.md runs it in production: a login role that is not a
superuser owns the database, migrates it (`python -m service.migrate upgrade`, compose's
`migrate`), and the API and a dispatcher run as it; a seen mark reaches a consumer. On CI's
PostgreSQL 15, which preloads pg_cron, the role may not read pg_cron's settings: the
dispatcher ("auto") starts anyway on Procrastinate and says why."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from service.config.base import ROOT
from tests.chaos_support import Process, api_process, dispatcher_process, service_env
from tests.consumers import RecordingConsumer, http_consumer, to_toml, wait_until
from tests.plain_role import PlainRole, cron_database, plain_role
from tests.support import bearer, client_token, config_data, free_port, serve

pytestmark = pytest.mark.timeout(180)
START_S = 60.0


def write_config(role: PlainRole, consumer_url: str, path: Path) -> Path:
    data = config_data(role.url, consumers={"promotions": http_consumer(consumer_url)})
    data["tags"] = {k: data["tags"][k] for k in ("promotions", "notifications")}
    data["scheduler"] = {"backend": "auto"}
    data["dispatcher"] = {"sweep_interval": 0.5, "metrics_port": 0}
    path.write_text(to_toml(data))
    return path


def alive(process: Process, check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    """`check`, failing at once with the log if the process has exited."""

    async def checked() -> bool:
        if not process.running:
            raise AssertionError(f"{process.name} exited:\n{process.log_tail()}")
        return await check()

    return checked


async def test_api_and_dispatcher_run_as_a_plain_role_that_migrated_its_database(
    pg_server_url: str, tmp_path: Path
) -> None:
    consumer = RecordingConsumer()
    with plain_role(pg_server_url, migrated=False) as role:
        migrated = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "service.migrate", "upgrade"],
            cwd=ROOT,
            env=service_env(tmp_path / "unused.toml", role.url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        async with serve(consumer.app) as consumer_base:
            env = service_env(
                write_config(role, f"{consumer_base}/seen", tmp_path / "c.toml"), role.url
            )
            port = free_port()
            api = api_process(env, port, tmp_path / "api.log")
            dispatcher = dispatcher_process(env, "plain", tmp_path / "dispatcher.log")
            api.start()
            dispatcher.start()
            try:
                await run_a_mark_through(role, pg_server_url, api, dispatcher, port, consumer)
            finally:
                api.stop()
                dispatcher.stop()


async def run_a_mark_through(
    role: PlainRole,
    pg_server_url: str,
    api: Process,
    dispatcher: Process,
    port: int,
    consumer: RecordingConsumer,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

        async def api_ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        async def dispatcher_ready() -> bool:
            return "consumer promotions via http" in dispatcher.log_tail(400)

        await wait_until(alive(api, api_ready), START_S, "the API's /readyz", step=0.1)
        await wait_until(alive(dispatcher, dispatcher_ready), START_S, "the dispatcher's loop")
        posted = await http.post(
            "/v1/seen",
            json={"tag": "promotions", "id": "promo-1"},
            headers=bearer(client_token("user-7")),
        )
        assert posted.status_code == 200, posted.text

        async def delivered() -> bool:
            return len(consumer.accepted) == 1

        await wait_until(alive(dispatcher, delivered), 30, "the mark at the consumer")
        ready = (await http.get("/readyz")).json()
    (received,) = consumer.requests
    assert received.verified
    assert (received.body["tag"], received.body["id"], received.body["user_id"]) == (
        "promotions",
        "promo-1",
        "user-7",
    )
    # The dispatcher chose its scheduler, and said why (pg_cron is closed to this role).
    assert ready["scheduler"]["backend"] == "procrastinate"
    if cron_database(pg_server_url) is not None:
        assert f"role {role.name!r} may not read cron.database_name" in ready["scheduler"]["detail"]
    # Every session in the service's database is the plain role's.
    async with await psycopg.AsyncConnection.connect(pg_server_url, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = %s", [role.name]
        )
        assert await cur.fetchall() == [(role.name,)]
        superuser = await admin.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role.name]
        )
        assert await superuser.fetchone() == (False,)
