"""service/migration_draft.py: reading definitions out of sql/ and the frozen migrations,
and the files it drafts (tests/integration/test_migration_draft.py runs one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.config.base import ROOT
from service.migration_draft import (
    Definition,
    DraftError,
    current_definition,
    draft,
    head_revision,
    previous_definition,
    schema_position,
    split_statements,
    strip_comments,
)
from service.sql import SQL_DIR, schema_files


def test_split_keeps_semicolons_inside_bodies_strings_and_comments() -> None:
    text = """-- a header; not a statement

-- about f
CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT ';' $$;
/* block; comment */ SELECT 'it''s; one';
CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;
-- trailing comment only
"""
    statements = split_statements(text)
    assert statements == [
        "-- about f\nCREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT ';' $$;",
        "/* block; comment */ SELECT 'it''s; one';",
        "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;",
    ]
    assert strip_comments("SELECT 1 -- x\n") == "SELECT 1  \n"


def test_signature_and_drop_of_a_function_with_defaults() -> None:
    one = Definition(
        "FUNCTION",
        "f",
        "-- why\nCREATE FUNCTION f(\n    a text, b interval DEFAULT '1 day'\n)"
        " RETURNS TABLE (rows bigint, cost text)\nLANGUAGE sql SET work_mem = '1MB' AS $$ $$;",
        "x.sql",
    )
    assert (
        one.signature()
        == "f(a text,b interval default '1 day')returns table(rows bigint,cost text)"
    )
    assert one.drop() == "DROP FUNCTION f(a text, b interval);"
    assert one.created_or_replaced().startswith("-- why\nCREATE OR REPLACE FUNCTION f(")
    # Attributes are not part of the signature: CREATE OR REPLACE changes them.
    other = Definition("FUNCTION", "f", one.text.replace("sql SET work_mem = '1MB'", "plpgsql"), "")
    assert other.signature() == one.signature()


def test_every_function_and_view_of_sql_matches_its_frozen_copy() -> None:
    """At head, each object's latest definition in the migrations is the one its file
    holds (the drift test proves it on a database; this proves the tool reads both)."""

    def code(d: Definition) -> str:
        return " ".join(strip_comments(d.created_or_replaced()).split())

    objects = schema_position(ROOT)
    assert len(objects) == 54
    for current in objects:
        before = previous_definition(ROOT, current.name)
        assert before is not None and code(before) == code(current), current.name


def test_previous_definition_is_the_latest_up_migration() -> None:
    before = previous_definition(ROOT, "notify_materialize_chunk")
    assert before is not None and before.source == "sql/migrations/0013_web_push.up.sql"
    earlier = previous_definition(ROOT, "quiet_hours_end")
    assert earlier is not None and earlier.source == "sql/migrations/0003_notify.up.sql"
    assert previous_definition(ROOT, "no_such_function") is None


def test_one_file_per_function_named_after_it() -> None:
    files = [p for p in schema_files(SQL_DIR) if p.parent.name == "functions"]
    assert len(files) == 45
    for path in files:
        statements = split_statements(path.read_text())
        assert len(statements) == 1, path
        assert current_definition(ROOT, path.stem).source.endswith(f"functions/{path.name}")


def test_draft_refuses_unknown_objects_and_bad_slugs(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    shutil.copytree(ROOT / "alembic", tmp_path / "alembic")
    with pytest.raises(DraftError, match="no function, procedure or view"):
        draft(tmp_path, "x", ["no_such_function"])
    with pytest.raises(DraftError, match="slug"):
        draft(tmp_path, "Bad-Slug", ["uuid_v7"])
    _, number = head_revision(tmp_path)
    made = draft(tmp_path, "same", ["uuid_v7"])
    # Unchanged, the draft replaces the function by itself in both directions.
    assert made.up.name == f"{number + 1:04d}_same.up.sql"
    assert "CREATE OR REPLACE FUNCTION uuid_v7()" in made.up.read_text()
    assert "CREATE OR REPLACE FUNCTION uuid_v7()" in made.down.read_text()
    after = f"{number + 2:04d}_same"
    with pytest.raises(DraftError, match=after):
        (tmp_path / "alembic" / "versions" / f"{after}.py").write_text("")
        draft(tmp_path, "same", ["uuid_v7"])
