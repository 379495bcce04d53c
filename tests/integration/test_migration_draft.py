"""A revision drafted from sql/'s files (service/migration_draft.py) upgrades a database at
head to exactly what the changed files declare, and its downgrade restores the head."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from alembic.config import Config as AlembicConfig

from alembic import command
from service import migrate
from service.config.base import ROOT
from service.migration_draft import draft
from service.sql import schema_sql
from tests.integration.test_migrations import differences, revision_of, snapshot_of
from tests.support import add_pg_partman, scratch_database

NEW_FUNCTION = """-- Rows in the outbox (a new function, for the test).
CREATE FUNCTION outbox_total() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM outbox
$$;
"""


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, path
    path.write_text(text.replace(old, new, 1))


def changed_tree(tmp_path: Path) -> Path:
    """A copy of sql/ and alembic/ with a function's body, a function's signature and a
    view changed, and a function added."""
    root = tmp_path / "repo"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "sql", root / "sql", ignore=skip)
    shutil.copytree(ROOT / "alembic", root / "alembic", ignore=skip)
    sql = root / "sql"
    edit(
        sql / "notify" / "functions" / "notify_send_at.sql",
        "WHEN quiet IS NULL THEN",
        "WHEN quiet IS NULL OR quiet = 'null' THEN",
    )
    scheduler_active = sql / "schedules" / "functions" / "scheduler_active.sql"
    scheduler_active.write_text(scheduler_active.read_text().replace("p_backend", "chosen"))
    edit(
        sql / "core" / "views.sql",
        "AS oldest_pending_at\nFROM outbox",
        "AS oldest_pending_at,\n       count(*) AS total\nFROM outbox",
    )
    (sql / "core" / "functions" / "outbox_total.sql").write_text(NEW_FUNCTION)
    edit(
        sql / "schema.order",
        "core/views.sql\n",
        "core/views.sql\ncore/functions/outbox_total.sql\n",
    )
    return root


def test_drafted_revision_upgrades_to_the_files_and_downgrades_to_head(
    tmp_path: Path, pg_server_url: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = changed_tree(tmp_path)
    made = draft(
        root,
        "probe",
        ["scheduler_active", "outbox_total", "notify_send_at", "outbox_consumer_stats"],
    )
    head = migrate.head_revision()
    probe = f"{int(head[:4]) + 1:04d}_probe"
    assert made.revision == probe
    module = made.module.read_text()
    assert f'revision = "{probe}"' in module and f'down_revision = "{head}"' in module
    up, down = made.up.read_text(), made.down.read_text()
    # Each object once, from its file; the changed signature is dropped first.
    assert up.count("CREATE OR REPLACE FUNCTION notify_send_at") == 1
    assert "DROP FUNCTION scheduler_active(p_backend text);" in up
    assert "DROP FUNCTION IF EXISTS outbox_total();" in down
    # A view comes back as it was, columns and all.
    assert "DROP VIEW IF EXISTS outbox_consumer_stats;" in down
    assert "-- From sql/migrations/0004_schedule.up.sql." in down

    # The revision runs as any other: alembic over the copy's versions and migrations.
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", root / "sql" / "migrations")
    cfg: AlembicConfig = migrate.alembic_config(db_url)
    cfg.set_main_option("script_location", str(root / "alembic"))
    at_head = snapshot_of(db_url)
    command.upgrade(cfg, "head")
    assert revision_of(db_url) == probe
    with scratch_database(pg_server_url) as declared:
        # As the test database has it (its days then come from pg_partman).
        add_pg_partman(declared)
        with psycopg.connect(declared) as conn:
            conn.execute(migrate.procrastinate_schema())
            conn.execute(schema_sql(root / "sql"))
        assert differences(snapshot_of(declared), snapshot_of(db_url)) == {}
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'notify_send_at'").fetchone()
        assert row is not None and "quiet = 'null'" in row[0]
        assert conn.execute("SELECT outbox_total()").fetchone() == (0,)

    command.downgrade(cfg, head)
    assert revision_of(db_url) == head
    assert differences(at_head, snapshot_of(db_url)) == {}
