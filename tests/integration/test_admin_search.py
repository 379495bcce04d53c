"""The admin's user search and lookup, against the real schema: an id's start and an
email's (whatever its case) are found through their indexes, LIKE's own characters in
what was typed match only themselves, and a pasted id finds what it names."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from service.admin.lookup import find
from service.sql import q

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
USERS = (
    ("a_b", None),
    ("axb", None),
    ("50%off", None),
    ("ann", "Ann.Lee@Example.org"),
    ("annabel", "bel@example.org"),
)


async def search(db: Conn, prefix: str) -> list[str]:
    cur = await db.execute(q("admin_users_search"), {"prefix": prefix, "limit": 10})
    return [row[0] for row in await cur.fetchall()]


async def add_users(db: Conn) -> None:
    for user_id, email in USERS:
        await db.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user_id, email))


async def test_ids_and_emails_by_their_start_and_like_characters_as_typed(db: Conn) -> None:
    await add_users(db)
    assert await search(db, "a_") == ["a_b"]  # not axb: `_` is no wildcard here
    assert await search(db, "50%") == ["50%off"]
    assert await search(db, "%") == []
    assert await search(db, "ann") == ["ann", "annabel"]
    assert await search(db, "ANN.LEE@") == ["ann"]  # an email whatever its case
    assert await search(db, "bel@EXAMPLE") == ["annabel"]


async def test_the_search_reads_its_indexes(db: Conn) -> None:
    await add_users(db)
    # A handful of rows: without this the planner would rightly scan them all.
    await db.execute("SET enable_seqscan = off")
    cur = await db.execute(
        "EXPLAIN (COSTS OFF) " + q("admin_users_search"), {"prefix": "ann", "limit": 10}
    )
    plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "users_id_prefix_idx" in plan and "users_email_lower_idx" in plan, plan
    assert "~>=~ 'ann'" in plan, plan  # an index range, not a filter over every row


async def test_a_pasted_id_finds_what_it_names(db: Conn) -> None:
    await add_users(db)
    exact, users = await find(db, "ann.lee@example.ORG")
    assert [(r["kind"], r["id"], r["href"]) for r in exact] == [
        ("user", "ann", "/admin/users?id=ann")
    ]
    assert users == []
    exact, users = await find(db, "ann")
    assert [(r["kind"], r["id"]) for r in exact] == [("user", "ann")]
    assert [u["id"] for u in users] == ["annabel"]  # its start, besides
    exact, users = await find(db, "00000000-0000-0000-0000-000000000000")
    assert exact == [] and users == []
    exact, _ = await find(db, "123")  # no notification nor delivery 123
    assert exact == []
    cur = db.cursor(row_factory=dict_row)
    await cur.execute(q("admin_users_recent"), {"limit": 2})
    assert len(await cur.fetchall()) == 2
