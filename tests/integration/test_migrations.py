"""Migrations: alembic upgrades and downgrades cleanly, and yields exactly what sql/ declares."""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
import pytest

from service import migrate
from service.sql import schema_sql
from tests.support import scratch_database

Snapshot = dict[str, set[tuple[Any, ...]]]

# Each query lists one kind of object in the current schema, as comparable text. Objects
# are named, not numbered, so two databases built the same way give equal snapshots.
CATALOG: dict[str, LiteralString] = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, coalesce(c.reloptions, '{}')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
    """,
    "columns": """
        SELECT c.relname, a.attname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
               format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               coalesce(co.collname, '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = current_schema()
    """,
    "constraints": """
        SELECT coalesce(c.relname, t.typname), k.conname, k.contype,
               pg_get_constraintdef(k.oid), k.condeferrable, k.condeferred
        FROM pg_constraint k
        JOIN pg_namespace n ON n.oid = k.connamespace
        LEFT JOIN pg_class c ON c.oid = k.conrelid
        LEFT JOIN pg_type t ON t.oid = k.contypid
        WHERE n.nspname = current_schema()
    """,
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid, true)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('v', 'm')
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema()
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND NOT t.tgisinternal
    """,
    "types": """
        SELECT t.typname, t.typtype,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_enum e WHERE e.enumtypid = t.oid),
               CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
               t.typnotnull, t.typdefault
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'd', 'c', 'r', 'm')
          AND (c.oid IS NULL OR c.relkind = 'c')
    """,
    "sequences": """
        SELECT sequencename, data_type::text, start_value, min_value, max_value,
               increment_by, cycle, cache_size
        FROM pg_sequences WHERE schemaname = current_schema()
    """,
    "extensions": "SELECT extname FROM pg_extension",
}
IGNORED = {"alembic_version", "alembic_version_pkc"}


def snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """The schema's objects (minus alembic's bookkeeping), kind by kind."""
    result: Snapshot = {}
    for kind, query in CATALOG.items():
        rows = conn.execute(query).fetchall()
        result[kind] = {
            tuple(str(v) for v in row) for row in rows if not IGNORED.intersection(map(str, row))
        }
    return result


def snapshot_of(url: str) -> Snapshot:
    with psycopg.connect(url) as conn:
        return snapshot(conn)


def differences(a: Snapshot, b: Snapshot) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Per kind, what only a has and what only b has (empty when the schemas are equal)."""
    return {
        kind: {"only_first": sorted(a[kind] - b[kind]), "only_second": sorted(b[kind] - a[kind])}
        for kind in CATALOG
        if a[kind] != b[kind]
    }


def declared_schema(url: str) -> None:
    """Build what sql/ declares: Procrastinate's schema, then the files sql/schema.order
    lists, in that order, run directly."""
    with psycopg.connect(url) as conn:
        conn.execute(migrate.procrastinate_schema())
        conn.execute(schema_sql())


def revision_of(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


def test_migrated_schema_equals_declared_schema(pg_server_url: str) -> None:
    with scratch_database(pg_server_url) as declared, scratch_database(pg_server_url) as migrated:
        declared_schema(declared)
        migrate.upgrade(migrated)
        a, b = snapshot_of(declared), snapshot_of(migrated)
    assert differences(a, b) == {}
    # The comparison covers the objects that matter (it would be vacuous on empty sets).
    tables = {row[0] for row in a["relations"] if row[1] == "r"}
    assert {"seen_marks", "outbox_default", "procrastinate_jobs"} <= tables
    partitioned = {row[0] for row in a["relations"] if row[1] == "p"}
    assert {"outbox", "delivery_attempts"} <= partitioned
    assert ("seen_marks", "expires_at") in {row[:2] for row in a["columns"]}
    assert "outbox_due_idx" in {row[1] for row in a["indexes"]}
    assert "seen_marks_pkey" in {row[1] for row in a["constraints"]}
    assert "outbox_consumer_stats" in {row[0] for row in a["views"]}
    assert "procrastinate_defer_jobs_v1" in {row[0] for row in a["functions"]}
    assert "procrastinate_trigger_delete_jobs_v1" in {row[1] for row in a["triggers"]}
    assert "procrastinate_job_status" in {row[0] for row in a["types"]}
    assert "outbox_id_seq" in {row[0] for row in a["sequences"]}


REVISIONS = [
    "0001_procrastinate",
    "0002_core",
    "0003_notify",
    "0004_schedule",
    "0005_admin",
    "0006_analytics",
    "0007_tracing",
    "0008_preference_rule",
    "0009_shard_key",
    "0010_citus",
    "0011_user_bucket",
    "0012_fanout_pushdown",
    "0013_web_push",
    "0014_inbox_stream",
    "0016_admin_search",
]


def test_upgrade_downgrade_upgrade(pg_server_url: str) -> None:
    """Each revision's downgrade restores exactly the schema of the one before, and going
    up again gives the same schema as the first time."""
    assert migrate.head_revision() == REVISIONS[-1]
    with scratch_database(pg_server_url) as empty, scratch_database(pg_server_url) as url:
        blank = snapshot_of(empty)
        assert revision_of(url) is None
        going_up: list[Snapshot] = []
        for revision in REVISIONS:
            migrate.upgrade(url, revision)
            assert revision_of(url) == revision
            going_up.append(snapshot_of(url))
        tables = {row[0] for row in going_up[0]["relations"]}
        assert "procrastinate_jobs" in tables and "outbox" not in tables
        assert "notifications" in {row[0] for row in going_up[-1]["relations"]}

        for n in range(len(REVISIONS) - 1, 0, -1):
            migrate.downgrade(url, REVISIONS[n - 1])
            assert revision_of(url) == REVISIONS[n - 1]
            assert differences(going_up[n - 1], snapshot_of(url)) == {}, REVISIONS[n - 1]
        migrate.downgrade(url, "base")
        assert revision_of(url) is None
        # Nothing is left behind: the database is as empty as a new one.
        assert differences(blank, snapshot_of(url)) == {}

        migrate.upgrade(url)
        assert revision_of(url) == REVISIONS[-1]
        assert differences(going_up[-1], snapshot_of(url)) == {}
    assert going_up[-1] != blank


DRIFTS: list[tuple[str, LiteralString, set[str]]] = [
    ("added column", "ALTER TABLE outbox ADD COLUMN extra integer", {"columns"}),
    (
        "renamed column",
        "ALTER TABLE outbox RENAME COLUMN last_error TO error_text",
        {"columns"},
    ),
    ("nullability", "ALTER TABLE seen_marks ALTER COLUMN subject DROP NOT NULL", {"columns"}),
    ("default", "ALTER TABLE outbox ALTER COLUMN attempts SET DEFAULT 1", {"columns"}),
    (
        "column type",
        "ALTER TABLE delivery_attempts ALTER COLUMN error TYPE varchar(100)",
        {"columns"},
    ),
    ("dropped index", "DROP INDEX outbox_dead_idx", {"indexes"}),
    (
        "changed index",
        "DROP INDEX outbox_due_idx;"
        " CREATE INDEX outbox_due_idx ON outbox (consumer, next_attempt_at)",
        {"indexes"},
    ),
    (
        "changed check",
        "ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;"
        " ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check CHECK (kind = 'seen')",
        {"constraints"},
    ),
    (
        "changed view",
        "CREATE OR REPLACE VIEW outbox_consumer_stats AS"
        " SELECT consumer, 0::bigint AS pending, 0::bigint AS due, 0::bigint AS in_flight,"
        " 0::bigint AS delivered, 0::bigint AS failed, 0::bigint AS dead,"
        " now() AS oldest_pending_at"
        " FROM outbox GROUP BY consumer",
        {"views"},
    ),
    (
        "changed function",
        "CREATE OR REPLACE FUNCTION procrastinate_unregister_worker_v1(worker_id bigint)"
        " RETURNS void LANGUAGE sql AS 'SELECT 1'",
        {"functions"},
    ),
    (
        "dropped trigger",
        "DROP TRIGGER procrastinate_trigger_delete_jobs_v1 ON procrastinate_jobs",
        {"triggers"},
    ),
    ("enum value", "ALTER TYPE procrastinate_job_status ADD VALUE 'paused'", {"types"}),
    ("sequence", "ALTER SEQUENCE outbox_id_seq INCREMENT BY 2", {"sequences"}),
    ("unlogged", "ALTER TABLE consumer_state SET UNLOGGED", {"relations"}),
]


@pytest.mark.parametrize(("ddl", "kinds"), [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_snapshot_detects_drift(db_url: str, ddl: LiteralString, kinds: set[str]) -> None:
    with psycopg.connect(db_url) as conn:
        before = snapshot(conn)
        conn.execute(ddl)
        after = snapshot(conn)
        conn.rollback()
        assert differences(before, snapshot(conn)) == {}
    assert set(differences(before, after)) == kinds


def test_alembic_version_is_not_part_of_the_snapshot(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        with_version = snapshot(conn)
        conn.execute("DROP TABLE alembic_version")
        assert differences(with_version, snapshot(conn)) == {}
        conn.rollback()


def buckets_of(url: str) -> list[tuple[str, bool]]:
    """Per table, whether the rows of user 'anna' sit in user_bucket('anna')."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT 'notifications', bucket = subject_bucket('client:anna') FROM notifications"
            " UNION ALL SELECT 'outbox', bucket = subject_bucket('client:anna') FROM outbox"
            " UNION ALL SELECT 'delivery_attempts', bucket = subject_bucket('client:anna')"
            "   FROM delivery_attempts"
            " UNION ALL SELECT 'digest_items', bucket = subject_bucket('client:anna')"
            "   FROM digest_items"
            " ORDER BY 1"
        ).fetchall()
    return [(str(table), bool(moved)) for table, moved in rows]


def test_user_bucket_moves_a_users_rows_and_back(pg_server_url: str) -> None:
    """0011 moves a user's rows written under 0010 (bucket of the user id) into the bucket
    of the user's seen marks, and its downgrade moves them back."""
    with scratch_database(pg_server_url) as url:
        migrate.upgrade(url, "0010_citus")
        with psycopg.connect(url) as conn:
            conn.execute(
                "WITH n AS ("
                "  INSERT INTO notifications (event_id, user_id, type, category, bucket)"
                "  VALUES (gen_random_uuid(), 'anna', 'new_episode', 'content',"
                "          subject_bucket('anna')) RETURNING id, bucket),"
                " o AS ("
                "  INSERT INTO outbox (kind, consumer, ordering_key, payload, notification_id,"
                "                      bucket)"
                "  SELECT 'notification', 'email', 'anna', '{}', n.id, n.bucket FROM n"
                "  RETURNING id, bucket)"
                " INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at,"
                "                                duration_ms, outcome, bucket)"
                " SELECT o.id, 1, 'email', now(), 5, 'retry', o.bucket FROM o"
            )
            conn.execute(
                "INSERT INTO digest_items (event_id, user_id, type, digest_key, bucket)"
                " VALUES (gen_random_uuid(), 'anna', 'comment_likes', 'c1',"
                "         subject_bucket('anna'))"
            )
        tables = ["delivery_attempts", "digest_items", "notifications", "outbox"]
        assert buckets_of(url) == [(t, False) for t in tables]
        migrate.upgrade(url, "0011_user_bucket")
        assert buckets_of(url) == [(t, True) for t in tables]
        migrate.downgrade(url, "0010_citus")
        assert buckets_of(url) == [(t, False) for t in tables]
