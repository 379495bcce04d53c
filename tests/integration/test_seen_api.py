"""POST /v1/seen, health, readiness and OpenAPI over real HTTP against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import types
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from service.app import create_app
from service.config.base import ConfigError
from service.errors import ERROR_CODES
from service.seen.endpoint import post_seen
from service.sql import q
from tests.support import (
    AUDIENCE,
    ISSUER,
    JWT_SECRET,
    bearer,
    client_token,
    config_data,
    driver_token,
    free_port,
    make_config,
    scratch_database,
    seen_counts,
    serve,
    token,
)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
NOTHING = (0, 0, 0)

# Also on a Citus cluster (--citus): the seen intake is the same SQL there.
pytestmark = pytest.mark.citus


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(create_app(make_config(db_url))) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def shared(
    pg_server_url: str, template_db: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Conn]]:
    """One server and database for the tests of refused requests (they write nothing)."""
    with scratch_database(pg_server_url, template_db) as url:
        async with (
            serve(create_app(make_config(url))) as base,
            httpx.AsyncClient(base_url=base) as client,
            await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        ):
            yield client, conn


@pytest.fixture
async def refusals(
    shared: tuple[httpx.AsyncClient, Conn],
) -> AsyncIterator[tuple[httpx.AsyncClient, Conn]]:
    yield shared
    # Should a test wrongly write, only that test fails.
    await shared[1].execute("TRUNCATE seen_marks, outbox, procrastinate_jobs CASCADE")


async def post(
    client: httpx.AsyncClient,
    body: Any,
    tok: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Content-Type": "application/json"} | (bearer(tok) if tok else {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/v1/seen", content=content, headers=all_headers | (headers or {}))


async def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    db: Conn,
    counts: tuple[int, int, int] = NOTHING,
) -> dict[str, Any]:
    """A JSON error with the documented status and code, and nothing (new) written."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) - {"allowed"} == {"code", "message"}
    assert ("allowed" in body) == (code == "unknown_tag")
    assert body["code"] == code
    assert ERROR_CODES[code][0] == status
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text
    assert await seen_counts(db) == counts
    return body


async def fetch_all(db: Conn, query: Any) -> list[tuple[Any, ...]]:
    cur = await db.execute(query)
    return await cur.fetchall()


# -- the happy path -------------------------------------------------------------------------


async def test_client_mark_is_recorded_with_outbox_row_and_job(
    api: httpx.AsyncClient, db: Conn
) -> None:
    tok = client_token("user-1", uid="100", bound_uids=["101", "102"], phone_id="phone-1")
    started = datetime.now(UTC)
    response = await post(api, {"tag": "promotions", "id": "promo-1"}, tok)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"tag": "promotions", "id": "promo-1", "status": "recorded"}

    subject = {
        "user_id": "user-1",
        "uid": "100",
        "bound_uids": ["101", "102"],
        "phone_id": "phone-1",
    }
    marks = await fetch_all(
        db,
        "SELECT tag, item_id, subject_key, subject_kind, subject, seen_at, expires_at, outbox_id"
        " FROM seen_marks",
    )
    assert len(marks) == 1
    tag, item_id, subject_key, kind, stored_subject, seen_at, expires_at, outbox_id = marks[0]
    assert (tag, item_id, subject_key, kind) == ("promotions", "promo-1", "client:user-1", "client")
    assert stored_subject == subject
    assert started - timedelta(seconds=5) <= seen_at <= datetime.now(UTC)
    assert expires_at - seen_at == timedelta(days=1)  # remember_for of the tag

    outbox = await fetch_all(
        db, "SELECT id, kind, consumer, ordering_key, payload, status, attempts FROM outbox"
    )
    assert len(outbox) == 1
    row_id, row_kind, consumer, ordering_key, payload, status, attempts = outbox[0]
    assert (row_id, row_kind, consumer, ordering_key) == (
        outbox_id,
        "seen",
        "promotions",
        "client:user-1",
    )
    assert (status, attempts) == ("pending", 0)
    assert payload["subject"] == subject
    assert (payload["event_type"], payload["tag"], payload["id"]) == (
        "client",
        "promotions",
        "promo-1",
    )

    jobs = await fetch_all(
        db,
        "SELECT queue_name, task_name, queueing_lock, args, status::text FROM procrastinate_jobs",
    )
    assert jobs == [
        ("dispatch", "dispatcher.wake", "dispatch:promotions", {"consumer": "promotions"}, "todo")
    ]


async def test_repeat_is_200_and_writes_nothing(api: httpx.AsyncClient, db: Conn) -> None:
    body = {"tag": "promotions", "id": "promo-1"}
    assert (await post(api, body, client_token())).json()["status"] == "recorded"
    before = await fetch_all(db, "SELECT * FROM seen_marks")
    for _ in range(3):
        response = await post(api, body, client_token())
        assert response.status_code == 200
        assert response.json() == {"tag": "promotions", "id": "promo-1", "status": "duplicate"}
    assert await seen_counts(db) == (1, 1, 1)
    assert await fetch_all(db, "SELECT * FROM seen_marks") == before


async def test_the_key_is_tag_id_and_subject(api: httpx.AsyncClient, db: Conn) -> None:
    statuses = [
        (await post(api, {"tag": tag, "id": item}, client_token(user))).json()["status"]
        for tag, item, user in [
            ("promotions", "x", "u1"),
            ("promotions", "x", "u2"),  # another subject
            ("promotions", "y", "u1"),  # another id
            ("cashback", "x", "u1"),  # another tag
            ("promotions", "x", "u1"),  # a repeat
        ]
    ]
    assert statuses == ["recorded"] * 4 + ["duplicate"]
    # Four outbox rows, one pending wake-up job for their consumer (the queueing lock).
    assert await seen_counts(db) == (4, 4, 1)


async def test_driver_mark(api: httpx.AsyncClient, db: Conn) -> None:
    response = await post(api, {"tag": "personal-goals", "id": "goal-7"}, driver_token("p1", "d1"))
    assert response.json() == {"tag": "personal-goals", "id": "goal-7", "status": "recorded"}
    rows = await fetch_all(db, "SELECT subject_key, subject_kind, subject FROM seen_marks")
    assert rows == [("driver:p1:d1", "driver", {"db_id": "p1", "uuid": "d1"})]
    jobs = await fetch_all(db, "SELECT queueing_lock FROM procrastinate_jobs")
    assert jobs == [("dispatch:goals",)]
    assert (await fetch_all(db, "SELECT payload->>'event_type' FROM outbox")) == [("driver",)]


async def test_expired_mark_is_revived(api: httpx.AsyncClient, db: Conn) -> None:
    body = {"tag": "promotions", "id": "promo-1"}
    assert (await post(api, body, client_token())).json()["status"] == "recorded"
    await db.execute("UPDATE seen_marks SET expires_at = now() - interval '1 second'")
    response = await post(api, body, client_token())
    assert response.json() == {"tag": "promotions", "id": "promo-1", "status": "recorded"}
    marks = await fetch_all(db, "SELECT outbox_id, expires_at > now() FROM seen_marks")
    outbox = await fetch_all(db, "SELECT id FROM outbox ORDER BY id")
    assert len(marks) == 1 and len(outbox) == 2
    assert marks[0] == (outbox[1][0], True)  # linked to the new outbox row, remembered again
    assert (await post(api, body, client_token())).json()["status"] == "duplicate"
    assert await seen_counts(db) == (1, 2, 1)


async def test_purge_deletes_only_expired_marks(api: httpx.AsyncClient, db: Conn) -> None:
    for n in range(5):
        assert (await post(api, {"tag": "promotions", "id": f"p{n}"}, client_token())).is_success
    await db.execute(
        "UPDATE seen_marks SET expires_at = now() - interval '1 minute'"
        " WHERE item_id IN ('p0', 'p1', 'p2')"
    )
    # Bounded chunks: the limit is respected, and repeating finishes the job.
    cur = await db.execute(q("purge_expired_seen_marks"), {"limit": 2})
    assert await cur.fetchone() == (2,)
    cur = await db.execute(q("purge_expired_seen_marks"), {"limit": 100})
    assert await cur.fetchone() == (1,)
    cur = await db.execute(q("purge_expired_seen_marks"), {"limit": 100})
    assert await cur.fetchone() == (0,)
    left = await fetch_all(db, "SELECT item_id FROM seen_marks ORDER BY item_id")
    assert left == [("p3",), ("p4",)]
    # Outbox rows are the delivery log: purging marks leaves them alone.
    assert await seen_counts(db) == (2, 5, 1)


# -- the batch form ---------------------------------------------------------------------------


async def test_batch(api: httpx.AsyncClient, db: Conn) -> None:
    items = [
        {"tag": "promotions", "id": "a"},
        {"tag": "cashback", "id": "b"},
        {"tag": "banners", "id": "c"},
        {"tag": "promotions", "id": "a"},  # repeated inside the batch
    ]
    response = await post(api, {"items": items}, client_token())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {"tag": "promotions", "id": "a", "status": "recorded"},
            {"tag": "cashback", "id": "b", "status": "recorded"},
            {"tag": "banners", "id": "c", "status": "recorded"},
            {"tag": "promotions", "id": "a", "status": "duplicate"},
        ]
    }
    # One job per consumer that got rows (promotions and cashback share one).
    locks = await fetch_all(db, "SELECT queueing_lock FROM procrastinate_jobs ORDER BY 1")
    assert locks == [("dispatch:banners",), ("dispatch:promotions",)]
    assert await seen_counts(db) == (3, 3, 2)
    kinds = await fetch_all(db, "SELECT tag, subject_kind FROM seen_marks ORDER BY tag")
    assert kinds == [("banners", "anonymous"), ("cashback", "client"), ("promotions", "client")]

    again = await post(api, {"items": items[:3]}, client_token())
    assert [i["status"] for i in again.json()["items"]] == ["duplicate"] * 2 + ["recorded"]
    # The anonymous mark had no Idempotency-Key, so it was a new one.
    assert await seen_counts(db) == (4, 4, 2)


async def test_batch_at_the_limit(db_url: str, db: Conn) -> None:
    config = make_config(db_url, api={"max_batch": 3, "max_body_bytes": 4096})
    async with serve(create_app(config)) as base, httpx.AsyncClient(base_url=base) as client:
        items = [{"tag": "promotions", "id": str(n)} for n in range(3)]
        response = await post(client, {"items": items}, client_token())
        assert [i["status"] for i in response.json()["items"]] == ["recorded"] * 3
        response = await post(client, {"items": [*items, {"tag": "promotions", "id": "3"}]})
        await assert_error(response, 400, "batch_too_large", db, (3, 3, 1))


async def test_any_batch_over_the_limit_is_batch_too_large(db_url: str, db: Conn) -> None:
    config = make_config(db_url, api={"max_batch": 100, "max_body_bytes": 1 << 20})
    async with serve(create_app(config)) as base, httpx.AsyncClient(base_url=base) as client:
        for size in (101, 1001, 5000):
            items = [{"tag": "promotions", "id": str(n)} for n in range(size)]
            response = await post(client, {"items": items}, client_token())
            await assert_error(response, 400, "batch_too_large", db)


@pytest.mark.parametrize(
    ("bad_item", "status", "code"),
    [
        ({"tag": "nope", "id": "x"}, 400, "unknown_tag"),
        ({"tag": "personal-goals", "id": "x"}, 403, "wrong_event_type"),
        ({"tag": "promotions", "id": ""}, 400, "invalid_body"),
    ],
)
async def test_one_bad_item_fails_the_whole_batch(
    refusals: tuple[httpx.AsyncClient, Conn], bad_item: dict[str, str], status: int, code: str
) -> None:
    api, db = refusals
    items = [{"tag": "promotions", "id": "ok-1"}, bad_item, {"tag": "banners", "id": "ok-2"}]
    response = await post(api, {"items": items}, client_token())
    await assert_error(response, status, code, db)


# -- anonymous marks ----------------------------------------------------------------------------


async def test_anonymous_marks_dedupe_by_idempotency_key(api: httpx.AsyncClient, db: Conn) -> None:
    body = {"tag": "banners", "id": "banner-1"}
    first = await post(api, body, headers={"Idempotency-Key": "key-1"})
    retry = await post(api, body, headers={"Idempotency-Key": "key-1"})
    other = await post(api, body, headers={"Idempotency-Key": "key-2"})
    assert [r.status_code for r in (first, retry, other)] == [200] * 3
    assert [r.json()["status"] for r in (first, retry, other)] == [
        "recorded",
        "duplicate",
        "recorded",
    ]
    assert await seen_counts(db) == (2, 2, 1)
    rows = await fetch_all(db, "SELECT DISTINCT subject_kind, subject FROM seen_marks")
    assert rows == [("anonymous", {})]
    payloads = await fetch_all(db, "SELECT payload - 'seen_at' FROM outbox")
    assert {json.dumps(p[0], sort_keys=True) for p in payloads} == {
        json.dumps(
            {"event_type": "anonymous", "tag": "banners", "id": "banner-1", "subject": {}},
            sort_keys=True,
        )
    }


async def test_anonymous_marks_without_a_key_are_each_recorded(
    api: httpx.AsyncClient, db: Conn
) -> None:
    for _ in range(2):
        response = await post(api, {"tag": "banners", "id": "banner-1"})
        assert response.json()["status"] == "recorded"
    assert await seen_counts(db) == (2, 2, 1)


async def test_identified_callers_may_mark_anonymous_tags(api: httpx.AsyncClient, db: Conn) -> None:
    response = await post(api, {"tag": "banners", "id": "b"}, driver_token())
    assert response.json()["status"] == "recorded"
    # No subject is kept for an anonymous tag, whoever the caller was.
    rows = await fetch_all(db, "SELECT subject_kind, subject FROM seen_marks")
    assert rows == [("anonymous", {})]


async def test_anonymous_caller_on_identified_tags(
    refusals: tuple[httpx.AsyncClient, Conn],
) -> None:
    api, db = refusals
    for tag in ("promotions", "personal-goals"):
        response = await post(api, {"tag": tag, "id": "x"})
        await assert_error(response, 401, "unauthenticated", db)


# -- errors ---------------------------------------------------------------------------------


async def test_wrong_event_type(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api, db = refusals
    response = await post(api, {"tag": "personal-goals", "id": "x"}, client_token())
    await assert_error(response, 403, "wrong_event_type", db)
    response = await post(api, {"tag": "promotions", "id": "x"}, driver_token())
    await assert_error(response, 403, "wrong_event_type", db)


def _signed(body: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return jwt.encode(body, secret, algorithm="HS256")


NOW = int(time.time())
BAD_TOKENS = {
    "bad signature": lambda: client_token() + "x",
    "other secret": lambda: token({"kind": "client", "sub": "u"}, secret="s" * 40),
    "expired": lambda: token({"kind": "client", "sub": "u"}, ttl=-600),
    "wrong aud": lambda: token({"kind": "client", "sub": "u", "aud": "other"}),
    "wrong iss": lambda: token({"kind": "client", "sub": "u", "iss": "other"}),
    "missing exp": lambda: _signed({"aud": AUDIENCE, "iss": ISSUER, "kind": "client", "sub": "u"}),
    "not a jwt": lambda: "hello",
    "no kind": lambda: token({"sub": "u"}),
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_invalid_identity(refusals: tuple[httpx.AsyncClient, Conn], make: Any) -> None:
    api, db = refusals
    # Even for an anonymous tag: a caller who sends a bad token is told so.
    for tag in ("promotions", "banners"):
        response = await post(api, {"tag": tag, "id": "x"}, make())
        await assert_error(response, 401, "invalid_token", db)


async def test_non_bearer_authorization(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api, db = refusals
    response = await post(
        api, {"tag": "promotions", "id": "x"}, headers={"Authorization": "Basic dTpw"}
    )
    await assert_error(response, 401, "invalid_token", db)


BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "not json": (b"{tag: promotions}", "malformed_json"),
    "truncated": (b'{"tag": "promotions", "id": "x"', "malformed_json"),
    "empty": (b"", "malformed_json"),
    "not utf-8": (b'{"tag": "promotions", "id": "\xff"}', "malformed_json"),
    "array": (b'[{"tag": "promotions", "id": "x"}]', "invalid_body"),
    "string": (b'"promotions"', "invalid_body"),
    "empty object": (b"{}", "invalid_body"),
    "missing id": (b'{"tag": "promotions"}', "invalid_body"),
    "missing tag": (b'{"id": "x"}', "invalid_body"),
    "null id": (b'{"tag": "promotions", "id": null}', "invalid_body"),
    "number id": (b'{"tag": "promotions", "id": 5}', "invalid_body"),
    "unknown field": (b'{"tag": "promotions", "id": "x", "user_id": "u2"}', "invalid_body"),
    "both forms": (
        b'{"tag": "promotions", "id": "x", "items": [{"tag": "promotions", "id": "y"}]}',
        "invalid_body",
    ),
    "empty items": (b'{"items": []}', "invalid_body"),
    "item not an object": (b'{"items": ["x"]}', "invalid_body"),
    "empty id": (b'{"tag": "promotions", "id": ""}', "invalid_body"),
    "id too long": (json.dumps({"tag": "promotions", "id": "x" * 257}).encode(), "invalid_body"),
    "tag too long": (json.dumps({"tag": "t" * 65, "id": "x"}).encode(), "invalid_body"),
    "uppercase tag": (b'{"tag": "Promotions", "id": "x"}', "invalid_body"),
    "tag with newline": (b'{"tag": "promotions\\n", "id": "x"}', "invalid_body"),
    "id with NUL": (b'{"tag": "promotions", "id": "a\\u0000b"}', "invalid_body"),
    "id with tab": (b'{"tag": "promotions", "id": "a\\tb"}', "invalid_body"),
    "id with DEL": (b'{"tag": "promotions", "id": "a\\u007fb"}', "invalid_body"),
    "id ending in newline": (b'{"tag": "promotions", "id": "abc\\n"}', "invalid_body"),
    "id ending in CR LF": (b'{"tag": "promotions", "id": "abc\\r\\n"}', "invalid_body"),
    "control char in batch": (
        b'{"items": [{"tag": "promotions", "id": "ok"}, {"tag": "promotions", "id": "\\u001b"}]}',
        "invalid_body",
    ),
    "unknown tag": (b'{"tag": "no-such-tag", "id": "x"}', "unknown_tag"),
}


@pytest.mark.parametrize(("body", "code"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_bodies(refusals: tuple[httpx.AsyncClient, Conn], body: bytes, code: str) -> None:
    api, db = refusals
    response = await post(api, body, client_token())
    await assert_error(response, 400, code, db)


async def test_longest_valid_id_and_tag(db_url: str, db: Conn) -> None:
    tag = "t" * 64
    data = config_data(db_url)
    data["tags"][tag] = {"consumer": "promotions", "event_type": "client", "remember_for": 60}
    config = make_config(db_url, tags=data["tags"])
    async with serve(create_app(config)) as base, httpx.AsyncClient(base_url=base) as client:
        item = "é" + "x" * 254 + "✓"  # 256 characters, not bytes
        response = await post(client, {"tag": tag, "id": item}, client_token())
        assert response.json() == {"tag": tag, "id": item, "status": "recorded"}
    assert await fetch_all(db, "SELECT tag, item_id FROM seen_marks") == [(tag, item)]


async def test_idempotency_key_too_long(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api, db = refusals
    response = await post(
        api, {"tag": "banners", "id": "x"}, headers={"Idempotency-Key": "k" * 256}
    )
    await assert_error(response, 400, "invalid_body", db)


async def test_body_over_the_limit(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api, db = refusals
    big = json.dumps({"tag": "promotions", "id": "x", "pad": "p" * 5000}).encode()
    response = await post(api, big, client_token())
    await assert_error(response, 413, "payload_too_large", db)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tag": "promotions", "id": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    # Without a Content-Length (chunked), the limit is enforced while reading.
    response = await api.post(
        "/v1/seen",
        content=chunks(),
        headers={"Content-Type": "application/json"} | bearer(client_token()),
    )
    assert "content-length" not in response.request.headers
    await assert_error(response, 413, "payload_too_large", db)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_not_json(refusals: tuple[httpx.AsyncClient, Conn], content_type: str | None) -> None:
    api, db = refusals
    headers = bearer(client_token()) | ({"Content-Type": content_type} if content_type else {})
    response = await api.post(
        "/v1/seen", content=b'{"tag": "promotions", "id": "x"}', headers=headers
    )
    await assert_error(response, 415, "unsupported_media_type", db)


async def test_json_content_type_with_charset(api: httpx.AsyncClient, db: Conn) -> None:
    response = await post(
        api,
        {"tag": "promotions", "id": "x"},
        client_token(),
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.json()["status"] == "recorded"


async def test_unknown_paths_and_methods(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api, db = refusals
    await assert_error(await api.get("/v1/nothing"), 404, "not_found", db)
    response = await api.get("/v1/seen")
    await assert_error(response, 405, "method_not_allowed", db)


# -- failures between the writes --------------------------------------------------------------

FAIL_ON_INSERT = """
CREATE FUNCTION test_fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'injected failure on %', TG_TABLE_NAME;
END $$;
"""


# The failure is a trigger, which Citus refuses on a distributed table.
@pytest.mark.single_server
@pytest.mark.parametrize("table", ["outbox", "procrastinate_jobs"])
async def test_a_failure_between_the_writes_leaves_nothing(
    api: httpx.AsyncClient, db: Conn, table: str
) -> None:
    await db.execute(FAIL_ON_INSERT)
    await db.execute(
        psycopg.sql.SQL(
            "CREATE TRIGGER test_fail BEFORE INSERT ON {} FOR EACH ROW"
            " EXECUTE FUNCTION test_fail_insert()"
        ).format(psycopg.sql.Identifier(table))
    )
    body = {"items": [{"tag": "promotions", "id": "a"}, {"tag": "personal-goals", "id": "b"}]}
    response = await post(api, {"tag": "promotions", "id": "a"}, client_token())
    error = await assert_error(response, 500, "internal_error", db)
    assert "injected" not in error["message"]  # no internals in the answer
    response = await post(api, body | {}, client_token())
    await assert_error(response, 403, "wrong_event_type", db)

    await db.execute(
        psycopg.sql.SQL("DROP TRIGGER test_fail ON {}").format(psycopg.sql.Identifier(table))
    )
    # The failed attempt left no half-written mark that would turn the retry into a repeat.
    response = await post(api, {"tag": "promotions", "id": "a"}, client_token())
    assert response.json()["status"] == "recorded"
    assert await seen_counts(db) == (1, 1, 1)


# -- the database is unavailable ---------------------------------------------------------------


async def test_database_unavailable_is_503_with_retry_after() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with (
        serve(create_app(make_config(url))) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        started = time.monotonic()
        single, batch, anonymous, ready = await asyncio.gather(
            post(client, {"tag": "promotions", "id": "x"}, client_token()),
            post(client, {"items": [{"tag": "promotions", "id": "x"}]}, client_token()),
            post(client, {"tag": "banners", "id": "x"}, headers={"Idempotency-Key": "k"}),
            client.get("/readyz"),
        )
        assert time.monotonic() - started < 5  # acquire_timeout is 2 s
        for response in (single, batch, anonymous):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "3"
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {
                "code": "database_unavailable",
                "message": ERROR_CODES["database_unavailable"][1],
            }
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"

        # Each 503 is a new error: one shared error would collect every request's frames.
        gc.collect()
        assert not [
            o
            for o in gc.get_objects()
            if isinstance(o, types.FrameType) and o.f_code is post_seen.__code__
        ]

        # 4xx do not depend on the database, and liveness does not either.
        response = await post(client, {"tag": "nope", "id": "x"}, client_token())
        assert (response.status_code, response.json()["code"]) == (400, "unknown_tag")
        assert (await client.get("/healthz")).status_code == 200


# -- health, readiness, OpenAPI -----------------------------------------------------------------


async def test_healthz(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api = refusals[0]
    response = await api.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "detail": None})


# It drops alembic_version: the cluster's one database is shared by every test.
@pytest.mark.single_server
async def test_readyz(api: httpx.AsyncClient, db: Conn) -> None:
    response = await api.get("/readyz")
    assert (response.status_code, response.json()["status"]) == (200, "ok")

    await db.execute("UPDATE alembic_version SET version_num = '0001_procrastinate'")
    response = await api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "0001_procrastinate" in response.json()["detail"]

    await db.execute("DELETE FROM alembic_version")
    response = await api.get("/readyz")
    assert (response.status_code, response.json()["status"]) == (503, "unavailable")

    await db.execute("DROP TABLE alembic_version")
    response = await api.get("/readyz")
    assert (response.status_code, response.json()["status"]) == (503, "unavailable")
    # The failed check did not poison the pool: marks still work.
    assert (await post(api, {"tag": "banners", "id": "x"})).status_code == 200


SEEN_ERROR_CODES = (
    "malformed_json",
    "invalid_body",
    "unknown_tag",
    "batch_too_large",
    "unauthenticated",
    "invalid_token",
    "wrong_event_type",
    "client_identity_required",
    "payload_too_large",
    "unsupported_media_type",
    "database_unavailable",
    "internal_error",
)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_openapi(refusals: tuple[httpx.AsyncClient, Conn]) -> None:
    api = refusals[0]
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    # Every reference resolves.
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref

    post_op = doc["paths"]["/v1/seen"]["post"]
    request_schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema == {"$ref": "#/components/schemas/SeenRequest"}
    # One mark or a batch: each form's fields required, nothing else allowed.
    assert schemas["SeenRequest"]["oneOf"] == [
        {"$ref": "#/components/schemas/SeenItem"},
        {"$ref": "#/components/schemas/SeenBatch"},
    ]
    tag_schema = schemas["SeenItem"]["properties"]["tag"]
    assert (tag_schema["maxLength"], tag_schema["minLength"]) == (64, 1)
    assert set(schemas["SeenItem"]["required"]) == {"tag", "id"}
    assert schemas["SeenBatch"]["required"] == ["items"]
    for form in ("SeenItem", "SeenBatch"):
        assert schemas[form]["additionalProperties"] is False
    assert schemas["SeenItem"]["properties"]["id"]["maxLength"] == 256
    assert schemas["ErrorBody"]["required"] == ["code", "message"]

    responses = post_op["responses"]
    errors = ("400", "401", "403", "413", "415", "431", "500", "503")
    assert set(responses) == {"200", *errors}
    for status in errors:
        content = responses[status]["content"]["application/json"]["schema"]
        assert content == {"$ref": "#/components/schemas/ErrorBody"}
    documented = " ".join(r.get("description", "") for r in responses.values())
    for code in SEEN_ERROR_CODES:
        assert f"`{code}`" in documented, code
        assert responses[str(ERROR_CODES[code][0])]
    assert doc["paths"]["/readyz"]["get"]["responses"]["503"]
    assert "/healthz" in doc["paths"]


# -- start-up ----------------------------------------------------------------------------------


async def test_bad_identity_settings_fail_start_up(db_url: str) -> None:
    identity = {"jwt": {"algorithms": ["RS256"], "audience": AUDIENCE, "issuer": ISSUER}}
    app = create_app(make_config(db_url, identity=identity))
    with pytest.raises(ConfigError, match="RS256 needs public_key_file or jwks_file"):
        async with app.router.lifespan_context(app):
            pass


# -- trusted gateway ---------------------------------------------------------------------------

GATEWAY_CLIENT = {
    "X-YaTaxi-UserId": "gw-user",
    "X-Yandex-UID": "4001",
    "X-YaTaxi-PhoneId": "gw-phone",
    "X-YaTaxi-Bound-Uids": "4002,4003",
}


def gateway_config(db_url: str, trusted: list[str], enabled: bool = True) -> Any:
    data = config_data(db_url)
    data["identity"]["gateway"] = {"enabled": enabled, "trusted_peers": trusted}
    return make_config(db_url, identity=data["identity"])


def from_address(base: str, address: str) -> httpx.AsyncClient:
    """A client whose connections come from this loopback address."""
    return httpx.AsyncClient(
        base_url=base, transport=httpx.AsyncHTTPTransport(local_address=address)
    )


async def test_gateway_headers_from_a_trusted_peer(db_url: str, db: Conn) -> None:
    async with serve(create_app(gateway_config(db_url, ["127.0.0.1/32"]))) as base:
        async with from_address(base, "127.0.0.1") as client:
            response = await post(client, {"tag": "promotions", "id": "x"}, headers=GATEWAY_CLIENT)
            assert response.json()["status"] == "recorded"
            driver = {"X-YaTaxi-Park-Id": "gw-park", "X-YaTaxi-Driver-Profile-Id": "gw-driver"}
            response = await post(client, {"tag": "personal-goals", "id": "g"}, headers=driver)
            assert response.json()["status"] == "recorded"
    rows = await fetch_all(db, "SELECT subject_key, subject FROM seen_marks ORDER BY tag")
    assert rows == [
        ("driver:gw-park:gw-driver", {"db_id": "gw-park", "uuid": "gw-driver"}),
        (
            "client:gw-user",
            {
                "user_id": "gw-user",
                "uid": "4001",
                "bound_uids": ["4002", "4003"],
                "phone_id": "gw-phone",
            },
        ),
    ]


async def test_gateway_headers_from_an_untrusted_peer_are_ignored(db_url: str, db: Conn) -> None:
    async with serve(create_app(gateway_config(db_url, ["127.0.0.1/32"]))) as base:
        async with from_address(base, "127.0.0.2") as client:
            # Claiming to be forwarded by the trusted address does not help either.
            for extra in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
                response = await post(
                    client, {"tag": "promotions", "id": "x"}, headers=GATEWAY_CLIENT | extra
                )
                await assert_error(response, 401, "unauthenticated", db)
            # On an anonymous tag the mark is taken, but as anonymous: the headers are ignored.
            response = await post(client, {"tag": "banners", "id": "b"}, headers=GATEWAY_CLIENT)
            assert response.json()["status"] == "recorded"
    rows = await fetch_all(db, "SELECT subject_kind, subject FROM seen_marks")
    assert rows == [("anonymous", {})]


async def test_gateway_headers_ignored_when_the_gateway_is_off(db_url: str, db: Conn) -> None:
    config = gateway_config(db_url, ["127.0.0.1/32"], enabled=False)
    async with serve(create_app(config)) as base, from_address(base, "127.0.0.1") as client:
        response = await post(client, {"tag": "promotions", "id": "x"}, headers=GATEWAY_CLIENT)
        await assert_error(response, 401, "unauthenticated", db)
