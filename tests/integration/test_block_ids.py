"""Ids numbered in blocks (block_id(), take_blocks()): what the fan-out and the digest
flush use on the Citus workers instead of a sequence per row."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def test_a_statements_ids_are_unique_past_one_block_and_apart_from_later_ones(
    db: Conn,
) -> None:
    # 3,000 rows in each of two buckets: three blocks' worth per bucket.
    cur = await db.execute(
        "WITH taken AS MATERIALIZED ("
        "  SELECT take_blocks(pg_get_serial_sequence('outbox', 'id')::regclass, 6000) AS b),"
        " ids AS ("
        "  SELECT block_id(t.b, n, k.bucket) AS id, cardinality(t.b) AS blocks"
        "  FROM taken AS t, generate_series(0, 2999) AS n,"
        "       (VALUES (0::smallint), (63::smallint)) AS k (bucket))"
        " SELECT count(*), count(DISTINCT id), count(id), min(blocks), max(id) FROM ids"
    )
    rows, distinct, not_null, blocks, highest = await cur.fetchone() or ()
    assert (rows, distinct, not_null, blocks) == (6000, 6000, 6000, 6)
    # A row written alone afterwards gets a block of its own, past every id above.
    cur = await db.execute("SELECT nextval(pg_get_serial_sequence('outbox', 'id'))")
    (alone,) = await cur.fetchone() or ()
    assert alone > highest
