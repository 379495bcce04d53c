"""The live inbox across real processes: streams on two API processes (one of them with
two workers) all get a change made through either; PostgreSQL restarts under open streams
and they carry on, missing nothing; a stopping API ends its streams at once and the
reconnect resumes where they were."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from service import migrate
from tests.chaos_support import PrivatePostgres, api_process, service_env, wait_ready
from tests.consumers import to_toml, wait_until
from tests.sse import EventStream, open_stream, stream_token
from tests.support import bearer, client_token, config_data, free_port


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        migrate.upgrade(pg.url)
        yield pg


def anna() -> dict[str, str]:
    return bearer(client_token("anna"))


async def see(api: httpx.AsyncClient, item: str) -> None:
    """POST /v1/seen of an inbox item by anna, retried while the database is away."""
    body = {"tag": "notifications", "id": item}

    async def recorded() -> bool:
        response = await api.post("/v1/seen", json=body, headers=anna())
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    await wait_until(recorded, 30, f"seen mark {item} recorded")


async def seen_ids(stream: EventStream) -> list[str]:
    message = await stream.next(30)
    assert message.event == "changes", message
    return list(message.data["seen"])


async def test_streams_on_every_api_process_and_worker_get_each_change_once_through_a_restart(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    config_file = tmp_path / "api.toml"
    config_file.write_text(to_toml(config_data(private_pg.url)))
    env = service_env(config_file, private_pg.url)
    ports = [free_port(), free_port()]
    apis = [
        api_process(env, ports[0], tmp_path / "api-0.log", workers=2),
        api_process(env, ports[1], tmp_path / "api-1.log"),
    ]
    async with AsyncExitStack() as stack:
        for api in apis:
            api.start()
            stack.callback(api.stop)
        clients = []
        for port, api in zip(ports, apis, strict=True):
            await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", 60, api)
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
                )
            )
        token = await stream_token(clients[0], anna())
        # Six streams of one user: four on the two-worker process, two on the other.
        streams = [
            await stack.enter_async_context(open_stream(clients[n], token))
            for n in (0, 0, 0, 0, 1, 1)
        ]
        for stream in streams:
            assert (await stream.next(30)).event == "ready"

        await see(clients[1], "101")
        for stream in streams:
            assert await seen_ids(stream) == ["101"]

        # PostgreSQL goes away under the open streams and comes back.
        await asyncio.to_thread(private_pg.restart, 1.0)
        await see(clients[0], "102")
        for stream in streams:
            assert await seen_ids(stream) == ["102"]


async def test_a_stopping_api_ends_its_streams_and_a_reconnect_resumes(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    config_file = tmp_path / "api.toml"
    config_file.write_text(to_toml(config_data(private_pg.url)))
    env = service_env(config_file, private_pg.url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = api_process(env, port, tmp_path / "api.log")
    api.start()
    try:
        await asyncio.to_thread(wait_ready, base, 60, api)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            token = await stream_token(client, anna())
            async with open_stream(client, token) as stream:
                last = (await stream.next(30)).id
                api.stop()
                # The stream ends when the API stops, not when its grace runs out.
                with pytest.raises((EOFError, httpx.RemoteProtocolError, httpx.ReadError)):
                    await stream.next(30)
            log = api.log_tail(200)
            assert "graceful shutdown exceeded" not in log, log
            assert api.wait(30) is not None

            # A mark while the API is down (straight into the database).
            async with await psycopg.AsyncConnection.connect(private_pg.url) as db:
                await db.execute(
                    "INSERT INTO inbox_changes (user_id, item_id, change)"
                    " VALUES ('anna', '201', 'seen')"
                )
            api.start()
            await asyncio.to_thread(wait_ready, base, 60, api)
            async with open_stream(client, token, last_event_id=last) as stream:
                assert await seen_ids(stream) == ["201"]
    finally:
        api.stop()
