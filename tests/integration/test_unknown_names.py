"""A consumer, channel, tag or event type that is not configured is an error naming the
ones that are: in every error body (`allowed`, and the message) and every ops command
(a non-zero exit), never an empty result that looks like success."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from typing import Any

import httpx
import psycopg
import pytest

from service.admin.accounts import create_user
from service.config.base import ROOT
from service.ops import redeliver_cli as redeliver
from service.ops.database_target import EXAMPLE_CONFIG, load_cli_config
from tests.notify_api import EPISODE, Conn, assert_error, auth, counts, new_key, running_api
from tests.support import bearer, client_token, make_config

pytestmark = pytest.mark.timeout(120)


def listed(names: Any) -> str:
    return ", ".join(sorted(names))


# -- the API ---------------------------------------------------------------------------------


async def test_an_unknown_tag_names_the_configured_tags(
    db_url: str, db: Conn, api: httpx.AsyncClient
) -> None:
    tags = sorted(make_config(db_url).tags)
    response = await api.post(
        "/v1/seen", json={"tag": "promotion", "id": "1"}, headers=bearer(client_token())
    )
    body = assert_error(response, 400, "unknown_tag")
    assert body["allowed"] == tags and "promotions" in tags
    assert body["message"] == f"No tag named 'promotion' (valid: {listed(tags)})."
    cur = await db.execute("SELECT count(*) FROM seen_marks")
    assert await cur.fetchone() == (0,)


async def test_an_unknown_event_type_names_the_configured_types(
    db_url: str, db: Conn, api: httpx.AsyncClient
) -> None:
    key = auth(new_key(db_url, "content"))
    types = sorted(make_config(db_url).event_types)
    before = await counts(db)
    for bad_type in ("new_episodes", "Not A Type"):
        event = {
            "type": bad_type,
            "idempotency_key": "k",
            "recipients": {"user_ids": ["anna"]},
            "data": EPISODE,
        }
        body = assert_error(
            await api.post("/v1/events", json=event, headers=key), 400, ("unknown_event_type")
        )
        assert body["allowed"] == types and "new_episode" in types
    assert body["message"].startswith("Expected `str` matching regex")  # not a name at all
    response = await api.post(
        "/v1/events",
        json={"type": "new_episodes", "idempotency_key": "k", "recipients": {"all": True}},
        headers=key,
    )
    assert response.json()["message"] == (
        f"No event type named 'new_episodes' (valid: {listed(types)})."
    )
    assert await counts(db) == before


@pytest.mark.parametrize(
    ("body", "code", "where", "given"),
    [
        ({"categories": {"gossip": {"email": False}}}, "unknown_category", "", "gossip"),
        (
            {"categories": {"content": {"pigeon": False}}},
            "unknown_channel",
            "categories.content: ",
            "pigeon",
        ),
        (
            {"quiet_hours": {"pigeon": {"start": "22:00", "end": "07:00"}}},
            "unknown_channel",
            "quiet_hours: ",
            "pigeon",
        ),
    ],
)
async def test_an_unknown_category_or_channel_names_the_configured_ones(
    db_url: str, api: httpx.AsyncClient, body: dict[str, Any], code: str, where: str, given: str
) -> None:
    config = make_config(db_url)
    key = auth(new_key(db_url, "content"))
    assert (await api.put("/v1/users/anna", json={}, headers=key)).status_code == 201
    names = sorted(config.categories if code == "unknown_category" else config.channels)
    kind = "category" if code == "unknown_category" else "channel"
    for path, headers in (
        ("/v1/preferences", bearer(client_token("anna"))),
        ("/v1/users/anna/preferences", key),
    ):
        error = assert_error(await api.put(path, json=body, headers=headers), 400, code)
        assert error["allowed"] == names
        text = f"no {kind} named {given!r} (valid: {listed(names)})."
        assert error["message"] == (where + text if where else text[0].upper() + text[1:])


async def test_the_admin_panel_names_the_consumers_and_providers_it_has(db_url: str) -> None:
    config = make_config(db_url)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_user(conn, "op", "operator-password-1", "operator", actor="test")
    admin = {"secure_cookies": False, "failure_delay": 0.05, "max_delay": 0.2}
    async with running_api(db_url, admin=admin) as client:
        form = await client.get("/admin/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        signed = await client.post(
            "/admin/login",
            data={"username": "op", "password": "operator-password-1", "csrf": csrf[1]},
        )
        assert signed.status_code == 303, signed.text
        page = await client.get("/admin/consumers")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        known = listed([*config.consumers, *config.channels])
        paused = await client.post("/admin/consumers/cashbak/pause", data={"csrf": csrf[1]})
        assert paused.status_code == 404
        assert f"There is no consumer or channel named &#39;cashbak&#39; (valid: {known})." in (
            paused.text
        )
        providers = listed(p.name for p in config.channels["sms"].providers)
        switched = await client.post(
            "/admin/consumers/sms/providers/nope/disable", data={"csrf": csrf[1]}
        )
        assert switched.status_code == 404
        assert f"has no provider named &#39;nope&#39; (valid: {providers})." in switched.text


# -- bin/redeliver ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "given", "kind"),
    [
        ("--consumer", "cashbak", "consumer or channel"),
        ("--tag", "cashback-offer", "tag"),
        ("--event-type", "payment_reciept", "event type"),
    ],
)
async def test_bin_redeliver_refuses_a_name_the_config_lacks(
    db_url: str,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    given: str,
    kind: str,
) -> None:
    monkeypatch.setenv("MARK_NOTIFY_CONFIG", str(EXAMPLE_CONFIG))
    config = load_cli_config()
    valid = {
        "consumer or channel": [*config.consumers, *config.channels],
        "tag": list(config.tags),
        "event type": list(config.event_types),
    }[kind]
    await db.execute(
        "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, bucket)"
        " VALUES ('seen', 'cashback', 'k', '{\"tag\": \"cashback-offers\"}', 'dead',"
        " subject_bucket('k'))"
    )
    code = await asyncio.to_thread(redeliver.main, ["--database-url", db_url, flag, given])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"redeliver: no {kind} named {given!r} (valid: {listed(valid)})\n"
    cur = await db.execute("SELECT status FROM outbox")
    assert await cur.fetchall() == [("dead",)]
    cur = await db.execute("SELECT count(*) FROM audit_log")
    assert await cur.fetchone() == (0,)


def test_bin_redeliver_with_a_typo_exits_non_zero_from_the_shell(db_url: str) -> None:
    """The issue's own example, as typed: it used to say "nothing to requeue" and exit 0."""
    env = os.environ | {"MARK_NOTIFY_CONFIG": str(EXAMPLE_CONFIG)}
    done = subprocess.run(
        [str(ROOT / "bin" / "redeliver"), "--database-url", db_url, "--consumer", "cashbak"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("redeliver: no consumer or channel named 'cashbak' (valid: ")
    assert "cashback" in done.stderr and "Traceback" not in done.stderr
