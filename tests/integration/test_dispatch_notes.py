"""The documented behaviour behind the dispatcher notes (docs/reliability.md, "What the
dispatcher does not promise"): consumer_state is per-dispatcher and last-writer-wins, and
an ordered consumer's order is that of a subject's committed rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from dispatcher import outbox
from service.sql import q
from tests.consumers import add_marks, client
from tests.support import all_buckets

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def test_consumer_state_shows_the_last_dispatcher_that_wrote_it(
    db: Conn, db_url: str
) -> None:
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open()
        opened = datetime.now(UTC)
        await outbox.save_consumer_state(
            pool,
            "promotions",
            status="active",
            breaker="open",
            failures=5,
            opened_at=opened,
            last_error="HTTP 503",
            dispatcher="d1",
        )
        # A second dispatcher whose own breaker for the consumer is closed.
        await outbox.save_consumer_state(
            pool,
            "promotions",
            status="active",
            breaker="closed",
            failures=0,
            opened_at=None,
            last_error=None,
            dispatcher="d2",
        )
    cur = await db.execute(
        "SELECT dispatcher, breaker, consecutive_failures FROM consumer_state"
        " WHERE consumer = 'promotions'"
    )
    # One row, the last writer's view, saying whose it is; d1's breaker is still open in
    # d1 (each process decides its claims by its own breaker, never by this row).
    assert await cur.fetchall() == [("d2", "closed", 0)]


async def _claim_ordered(db_url: str, dispatcher: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        params = {
            "consumer": "promotions",
            "limit": 10,
            "lease_s": 30.0,
            "dispatcher": dispatcher,
            "buckets": await all_buckets(conn),
        }
        cur = await conn.execute(q("claim_outbox_ordered"), params)
        rows = await cur.fetchall()
    return sorted((int(r[0]), str(r[2])) for r in rows)


async def test_ordered_rows_of_one_subject_go_in_the_order_they_became_visible(
    db: Conn, db_url: str
) -> None:
    subject = client("alice")
    # A wake-up already pending for the consumer (no dispatcher runs here): otherwise the
    # second write would wait on the first's uncommitted one (its queueing lock).
    await add_marks(db, "promotions", "promotions", [(client("carol"), "c1")])
    # Two requests of one subject in flight at once: the first takes the lower id but
    # commits last.
    async with await psycopg.AsyncConnection.connect(db_url) as first:
        await add_marks(first, "promotions", "promotions", [(subject, "first")])
        await add_marks(db, "promotions", "promotions", [(subject, "second")])
        claimed = [c for c in await _claim_ordered(db_url, "d1") if "alice" in c[1]]
        # Only the committed row is there to claim: it goes first.
        assert len(claimed) == 1
        second_id = claimed[0][0]
        # While it is leased, nothing else of the subject is claimable, by anyone.
        await first.commit()
        assert [c for c in await _claim_ordered(db_url, "d2") if "alice" in c[1]] == []
    cur = await db.execute(
        "UPDATE outbox SET status = 'delivered', claimed_until = NULL WHERE id = %s", [second_id]
    )
    assert cur.rowcount == 1
    # Then the other one, although its id is lower.
    later = await _claim_ordered(db_url, "d2")
    assert len(later) == 1 and later[0][0] < second_id

    # Requests one after the other (each acknowledged before the next was sent) are
    # always claimed in order: the later one waits for the earlier one.
    await add_marks(db, "promotions", "promotions", [(client("bob"), "b1")])
    await add_marks(db, "promotions", "promotions", [(client("bob"), "b2")])
    heads = await _claim_ordered(db_url, "d3")
    cur = await db.execute(
        "SELECT min(o.id) FROM outbox o JOIN seen_marks m ON m.outbox_id = o.id"
        " WHERE m.item_id IN ('b1', 'b2')"
    )
    row = await cur.fetchone()
    assert row is not None
    assert [h[0] for h in heads] == [row[0]]
