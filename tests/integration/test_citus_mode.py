"""The cluster mode's placement (service/citus.py, `citus_unplaced`) and the bucket groups
the dispatchers claim by: on one PostgreSQL here, on the Citus cluster with --citus."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from service import citus

Conn = psycopg.AsyncConnection[Any]

DISTRIBUTED = {
    "outbox",
    "delivery_attempts",
    "seen_marks",
    "notifications",
    "digest_items",
    "buckets",
}
REFERENCE = {
    "notify_channels",
    "notify_categories",
    "notify_event_types",
    "consumer_controls",
    "provider_controls",
    "users",
    "preferences",
    "push_devices",
    "user_topics",
    "webpush_subscriptions",
}


async def groups(db: Conn) -> list[list[int]]:
    cur = await db.execute("SELECT g FROM bucket_groups() AS g")
    return [list(g) for (g,) in await cur.fetchall()]


async def test_the_cluster_mode_refuses_a_database_without_citus(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--citus"):
        pytest.skip("the cluster has citus")
    with pytest.raises(citus.CitusMissing, match='mode = "citus" but the database has no citus'):
        citus.distribute(db_url)


@pytest.mark.citus
async def test_one_group_on_one_server_one_per_shard_on_the_cluster(
    db: Conn, request: pytest.FixtureRequest
) -> None:
    found = await groups(db)
    # Every bucket exactly once, each group in bucket order.
    assert sorted(b for g in found for b in g) == list(range(64))
    assert all(g == sorted(g) for g in found)
    if not request.config.getoption("--citus"):
        assert len(found) == 1
        return
    shard_of = "SELECT get_shard_id_for_distribution_column('outbox', %s::smallint)"
    shards = []
    for group in found:
        ids = set()
        for bucket in group:
            row = await (await db.execute(shard_of, [bucket])).fetchone()
            assert row is not None
            ids.add(row[0])
        assert len(ids) == 1, f"group {group} spans shards {ids}"
        shards.append(ids.pop())
    # One group per shard that holds a bucket (64 buckets hashed into 32 shards leave some
    # shards with none).
    assert len(set(shards)) == len(found) > 1


@pytest.mark.citus
async def test_the_cluster_places_each_table_once(
    db: Conn, db_url: str, request: pytest.FixtureRequest
) -> None:
    if not request.config.getoption("--citus"):
        pytest.skip("needs the cluster (--citus)")
    cur = await db.execute(
        "SELECT logicalrelid::regclass::text, partmethod, colocationid FROM pg_dist_partition"
    )
    placed = {name: (method, group) for name, method, group in await cur.fetchall()}
    assert {n for n, (m, _) in placed.items() if m == "h"} >= DISTRIBUTED
    assert {n for n, (m, _) in placed.items() if m == "n"} == REFERENCE
    assert len({placed[n][1] for n in DISTRIBUTED}) == 1, "not co-located"
    # Placing again changes nothing: the step runs after every upgrade.
    assert citus.distribute(db_url) == []
