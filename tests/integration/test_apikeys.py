"""Producer API keys: bin/apikey, hashing at rest, revocation, and which endpoints take
which kind of credential."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import time

import httpx
import psycopg
import pytest

from service.apikeys import (
    CACHE_TTL_S,
    RESERVED_PRODUCERS,
    create_key,
    list_keys,
    revoke_key,
)
from service.config.base import ROOT
from service.ops.apikeys_cli import main
from tests.notify_api import Conn, assert_error, auth, counts, running_api
from tests.support import bearer, client_token, seen_counts

KEY = re.compile(r"mn_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def apikey(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": db_url}
    return subprocess.run(
        [str(ROOT / "bin" / "apikey"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_keys_are_stored_hashed_and_listed_by_prefix(db_url: str, db: Conn) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        created = await create_key(conn, "billing", ["users:read", "events:write"], actor="test")
        other = await create_key(conn, "crm", ["users:write"], actor="test")
        listed = await list_keys(conn)
    assert KEY.fullmatch(created.key) and created.key.startswith(f"mn_{created.prefix}_")
    assert created.scopes == ("events:write", "users:read")
    assert created.key != other.key
    assert [(k.prefix, k.producer, k.scopes, k.revoked_at) for k in listed] == [
        (created.prefix, "billing", ("events:write", "users:read"), None),
        (other.prefix, "crm", ("users:write",), None),
    ]
    # At rest: the prefix and a SHA-256 of the key, never the key or its secret part.
    cur = await db.execute("SELECT t::text, secret_hash FROM api_keys AS t ORDER BY created_at")
    rows = await cur.fetchall()
    # The secret is what follows "mn_<prefix>_"; it may itself hold "_" (base64url).
    secret = created.key.split("_", 2)[2]
    for text, _ in rows:
        assert created.key not in text and secret not in text
        assert other.key.split("_", 2)[2] not in text
    assert bytes(rows[0][1]) == hashlib.sha256(created.key.encode()).digest()


@pytest.mark.parametrize(
    ("producer", "scopes"),
    [
        ("Billing", ["events:write"]),
        ("", ["events:write"]),
        ("ok", []),
        ("ok", ["admin"]),
        # The service's own producers: a key of theirs would read and collide with them.
        ("admin", ["events:write"]),
        ("digest", ["events:write"]),
    ],
)
async def test_create_refuses_bad_names_and_scopes(
    db_url: str, producer: str, scopes: list[str]
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        with pytest.raises(ValueError):
            await create_key(conn, producer, scopes, actor="test")


async def test_bin_apikey_create_list_revoke(db_url: str, db: Conn, api: httpx.AsyncClient) -> None:
    made = apikey(db_url, "create", "demo", "--scope", "events:write", "--quiet")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    # --quiet prints the key and nothing else, so KEY=$(bin/apikey ... --quiet) works.
    assert made.stdout == key + "\n" and KEY.fullmatch(key), made.stdout
    prefix = key[3:11]

    loud = apikey(db_url, "create", "demo", "--scope", "users:read", "--scope", "users:write")
    assert loud.returncode == 0, loud.stderr
    assert KEY.fullmatch(loud.stdout.strip())
    assert "shown only this once" in loud.stderr

    listing = apikey(db_url, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["PREFIX", "PRODUCER", "SCOPES"]
    assert any(line.split()[:3] == [prefix, "demo", "events:write"] for line in lines[1:])
    assert any(line.split()[2] == "users:write,users:read" for line in lines[1:])
    assert key not in listing.stdout and key[12:] not in listing.stdout

    # The key works over HTTP ...
    response = await api.get("/v1/events/00000000-0000-0000-0000-000000000000", headers=auth(key))
    assert_error(response, 404, "unknown_event")
    cur = await db.execute(
        "SELECT last_used_at IS NOT NULL FROM api_keys WHERE prefix = %s", (prefix,)
    )
    assert await cur.fetchone() == (True,)

    revoked = apikey(db_url, "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked {prefix}" in revoked.stdout
    assert apikey(db_url, "revoke", prefix).returncode == 0  # a repeat is harmless
    unknown = apikey(db_url, "revoke", "ffffffff")
    assert unknown.returncode == 1 and "no key" in unknown.stderr

    # ... and a fresh API process refuses it at once.
    async with running_api(db_url) as fresh:
        response = await fresh.get(
            "/v1/events/00000000-0000-0000-0000-000000000000", headers=auth(key)
        )
        assert "revoked" in assert_error(response, 401, "invalid_api_key")["message"]

    bad = apikey(db_url, "create", "demo", "--scope", "admin")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert apikey(db_url, "create", "Not A Name", "--scope", "users:read").returncode == 2
    cur = await db.execute("SELECT count(*) FROM api_keys")
    assert await cur.fetchone() == (2,)


async def test_a_running_api_refuses_a_revoked_key_within_the_cache_period(
    db_url: str, api: httpx.AsyncClient
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        created = await create_key(conn, "billing", ["users:read"], actor="test")
    headers = auth(created.key)
    assert (await api.get("/v1/users/nobody", headers=headers)).status_code == 404
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert await revoke_key(conn, created.prefix, actor="test") is not None
    revoked_at = time.monotonic()
    while (await api.get("/v1/users/nobody", headers=headers)).status_code != 401:
        assert time.monotonic() - revoked_at < CACHE_TTL_S + 2, "revocation never took effect"
        await asyncio.sleep(0.2)
    assert time.monotonic() - revoked_at <= CACHE_TTL_S + 2


async def test_main_prints_only_the_key_with_quiet(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    # In a thread: main runs its own event loop.
    made = await asyncio.to_thread(main, ["create", "ops", "--scope", "users:read", "--quiet"])
    assert made == 0
    out, err = capsys.readouterr()
    assert KEY.fullmatch(out.strip()) and err == ""
    # The whole key names its prefix too.
    assert await asyncio.to_thread(main, ["revoke", out.strip()]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("revoked ") and KEY.search(out) is None


async def test_service_keys_are_refused_on_user_endpoints(
    db_url: str, db: Conn, api: httpx.AsyncClient
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        made = await create_key(
            conn, "billing", ["events:write", "users:read", "users:write"], actor="test"
        )
    key = made.key
    before = await counts(db), await seen_counts(db)
    response = await api.post(
        "/v1/seen", json={"tag": "notifications", "id": "1"}, headers=auth(key)
    )
    assert_error(response, 403, "client_identity_required")
    # Even for a tag that takes anonymous marks: a key is never a user.
    response = await api.post("/v1/seen", json={"tag": "banners", "id": "b"}, headers=auth(key))
    assert_error(response, 403, "client_identity_required")
    for path in ("/v1/inbox", "/v1/preferences"):
        assert_error(await api.get(path, headers=auth(key)), 403, "client_identity_required")
    response = await api.put("/v1/preferences", json={"muted": True}, headers=auth(key))
    assert_error(response, 403, "client_identity_required")
    assert (await counts(db), await seen_counts(db)) == before


async def test_user_tokens_are_refused_on_service_endpoints(
    db: Conn, api: httpx.AsyncClient
) -> None:
    before = await counts(db)
    token = bearer(client_token("anna"))
    event = {"type": "new_episode", "idempotency_key": "k", "recipients": {"all": True}}
    for response in (
        await api.post("/v1/events", json=event, headers=token),
        await api.put("/v1/users/anna", json={}, headers=token),
        await api.get("/v1/users/anna/preferences", headers=token),
    ):
        assert_error(response, 401, "service_key_required")
    assert_error(await api.post("/v1/events", json=event), 401, "invalid_api_key")
    assert await counts(db) == before


def test_the_reserved_producers_are_the_ones_the_service_posts_as() -> None:
    from service.admin.mailing_progress import PRODUCER as MAILINGS

    flush = (ROOT / "sql" / "digests" / "functions" / "flush_digests.sql").read_text()
    assert MAILINGS in RESERVED_PRODUCERS
    assert "SELECT f.event_id, 'digest', 'flush:'" in flush and "digest" in RESERVED_PRODUCERS
