"""A Citus worker restarted under load loses no acknowledged mark (--citus, with
CITUS_CLUSTER_DIR naming the cluster's folder, as .ci/run's cluster.sh makes it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from service.app import create_app
from tests.support import bearer, client_token, make_config, serve

pytestmark = pytest.mark.citus

PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


def restart_worker(folder: Path) -> None:
    """Stop the first worker (fast: its sessions are cut) and start it again."""
    data = folder / "w1"
    command = f"{PG_CTL} -D {data} -l {folder}/log/w1.log -m fast -w -t 60 restart"
    subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", command], check=True)


async def test_a_worker_restarted_under_load_loses_no_acknowledged_mark(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    folder = os.environ.get("CITUS_CLUSTER_DIR")
    if not request.config.getoption("--citus") or not folder:
        pytest.skip("needs the cluster (--citus) and CITUS_CLUSTER_DIR")
    acknowledged: set[str] = set()
    answers: dict[int, int] = {}
    stop = asyncio.Event()
    headers = bearer(client_token("load-user"))

    async def client(n: int, api: httpx.AsyncClient) -> None:
        i = 0
        while not stop.is_set():
            item = f"c{n}-{i}"
            i += 1
            try:
                r = await api.post(
                    "/v1/seen", json={"tag": "promotions", "id": item}, headers=headers
                )
            except httpx.HTTPError:
                answers[0] = answers.get(0, 0) + 1
                continue
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
            if r.status_code == 200:
                acknowledged.add(item)
            else:
                await asyncio.sleep(0.05)

    async with (
        serve(create_app(make_config(db_url))) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as api,
    ):
        clients = [asyncio.create_task(client(n, api)) for n in range(8)]
        await asyncio.sleep(2)
        before = len(acknowledged)
        await asyncio.to_thread(restart_worker, Path(folder))
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*clients)
    assert before > 0, answers
    assert len(acknowledged) > before, f"no mark acknowledged after the restart: {answers}"
    # While the worker was away: 503 (retry later), never an internal error.
    assert set(answers) <= {200, 503}, answers
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        # A commit the worker had prepared when it stopped is finished by Citus' recovery
        # (every minute by itself): run it now rather than wait.
        await conn.execute("SELECT recover_prepared_transactions()")
        cur = await conn.execute(
            "SELECT m.item_id FROM seen_marks AS m JOIN outbox AS o"
            " ON o.id = m.outbox_id AND o.bucket = m.bucket"
            " WHERE m.tag = 'promotions'"
        )
        stored: set[Any] = {row[0] for row in await cur.fetchall()}
    assert acknowledged <= stored, f"acknowledged but lost: {sorted(acknowledged - stored)[:5]}"
