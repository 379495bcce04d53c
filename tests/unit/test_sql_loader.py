"""Named queries: every query under sql/ is documented, and bad files are refused; the
schema's files are the ones sql/schema.order lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.sql import (
    QUERIES,
    SQL_DIR,
    Query,
    QueryError,
    load_queries,
    parse_queries,
    q,
    query_files,
    schema_files,
)

GOOD = """-- name: first_query
-- returns: rows (a int, b text): what it gives,
--   continued on a second line
-- purpose: a test query.
SELECT 1 AS a, 'x' AS b;

-- name: second_query
-- returns: nothing
-- purpose: another one.
DELETE FROM t WHERE id = %(id)s;
"""


def test_every_named_query_has_headers() -> None:
    files = query_files()
    assert files, "sql/ has no query files"
    declared = []
    for path in files:
        names = re.findall(r"^--\s*name:\s*(\S+)", path.read_text(), flags=re.MULTILINE)
        assert names, f"{path} has no named query"
        # Beside their capability: sql/<area>/queries/<topic>.sql.
        assert path.parent.name == "queries" and path.parent.parent.parent == SQL_DIR, path
        declared += names
    assert sorted(declared) == sorted(QUERIES)
    for name, query in QUERIES.items():
        assert query.name == name
        assert query.returns.strip(), name
        assert query.purpose.strip(), name
        assert query.source.endswith(".sql")
        assert query.text.strip() and not query.text.rstrip().endswith(";"), name
        assert "-- name:" not in query.text, name


def test_queries_used_by_the_service_exist() -> None:
    for name in ("record_seen_marks", "purge_expired_seen_marks", "schema_revision"):
        assert q(name) == QUERIES[name].text
    with pytest.raises(KeyError):
        q("no_such_query")


def test_parse_splits_queries_and_joins_continued_headers() -> None:
    queries = parse_queries(GOOD, "good.sql")
    assert list(queries) == ["first_query", "second_query"]
    assert queries["first_query"] == Query(
        name="first_query",
        returns="rows (a int, b text): what it gives, continued on a second line",
        purpose="a test query.",
        text="SELECT 1 AS a, 'x' AS b",
        source="good.sql",
    )
    assert queries["second_query"].text == "DELETE FROM t WHERE id = %(id)s"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SELECT 1;\n", "no '-- name:' header"),
        ("", "no '-- name:' header"),
        ("SELECT 0;\n" + GOOD, "text before the first '-- name:' header"),
        ("-- name: q1\n-- purpose: p\nSELECT 1;\n", "query 'q1' lacks header ['returns']"),
        ("-- name: q1\n-- returns: r\nSELECT 1;\n", "query 'q1' lacks header ['purpose']"),
        ("-- name: q1\nSELECT 1;\n", "query 'q1' lacks header ['purpose', 'returns']"),
        ("-- name: q1\n-- returns: r\n-- purpose: p\n", "query 'q1' has no SQL"),
        ("-- name: q1\n-- returns: r\n-- purpose: p\n;\n", "query 'q1' has no SQL"),
        (
            "-- name: q1\n-- returns:\n-- purpose: p\nSELECT 1;\n",
            "query 'q1' lacks header ['returns']",
        ),
        (GOOD + GOOD.split("\n\n")[1], "query 'second_query' defined twice"),
        (
            GOOD + "\n-- name: Third-Query\n-- returns: r\n-- purpose: p\nSELECT 3;\n",
            "bad query name line '-- name: Third-Query' (want [a-z_][a-z0-9_]*)",
        ),
    ],
    ids=[
        "no header",
        "empty",
        "leading text",
        "no returns",
        "no purpose",
        "no headers",
        "no sql",
        "only a semicolon",
        "empty returns",
        "duplicate",
        "bad name",
    ],
)
def test_parse_rejects_malformed_files(text: str, reason: str) -> None:
    with pytest.raises(QueryError) as err:
        parse_queries(text, "bad.sql")
    assert str(err.value) == f"bad.sql: {reason}"


def test_load_rejects_a_name_defined_in_two_files(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(GOOD)
    (tmp_path / "b.sql").write_text("-- name: first_query\n-- returns: r\n-- purpose: p\nSELECT 2")
    with pytest.raises(QueryError, match=r"b\.sql: query 'first_query' also in a\.sql"):
        load_queries(tmp_path)


def test_load_rejects_a_malformed_file(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(GOOD)
    (tmp_path / "b.sql").write_text("-- name: broken\nSELECT 1\n")
    with pytest.raises(QueryError, match=r"b\.sql: query 'broken' lacks header"):
        load_queries(tmp_path)


def test_load_reads_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("not sql")
    assert set(load_queries(tmp_path)) == {"first_query", "second_query"}


def test_every_sql_file_is_a_schema_file_a_query_file_or_a_migration() -> None:
    schema = schema_files()
    queries = query_files()
    migrations = sorted((SQL_DIR / "migrations").glob("*.sql"))
    assert not set(schema) & set(queries)
    assert sorted(SQL_DIR.rglob("*.sql")) == sorted(schema + queries + migrations)
    # The schema's files: each area's tables, views, first partitions and functions/<name>.sql.
    for path in schema:
        assert path.name in {"tables.sql", "views.sql", "indexes.sql", "partitions.sql"} or (
            path.parent.name == "functions"
        ), path


def write_tree(root: Path) -> None:
    (root / "core" / "queries").mkdir(parents=True)
    (root / "core" / "functions").mkdir()
    (root / "migrations").mkdir()
    (root / "core" / "tables.sql").write_text("CREATE TABLE t (id int);\n")
    (root / "core" / "functions" / "f.sql").write_text("CREATE FUNCTION f() ...;\n")
    (root / "core" / "queries" / "a.sql").write_text(GOOD)
    (root / "migrations" / "0001_x.up.sql").write_text("CREATE TABLE t (id int);\n")
    (root / "schema.order").write_text("# comment\ncore/tables.sql\n\ncore/functions/f.sql\n")


def test_load_reads_query_files_anywhere_but_migrations_and_schema(tmp_path: Path) -> None:
    write_tree(tmp_path)
    assert [p.name for p in schema_files(tmp_path)] == ["tables.sql", "f.sql"]
    assert query_files(tmp_path) == [tmp_path / "core" / "queries" / "a.sql"]
    queries = load_queries(tmp_path)
    assert set(queries) == {"first_query", "second_query"}
    assert queries["first_query"].source == "core/queries/a.sql"


def test_load_rejects_a_name_defined_in_two_areas(tmp_path: Path) -> None:
    write_tree(tmp_path)
    (tmp_path / "seen" / "queries").mkdir(parents=True)
    (tmp_path / "seen" / "queries" / "a.sql").write_text(GOOD.split("\n\n")[1])
    with pytest.raises(
        QueryError, match=r"seen/queries/a\.sql: query 'second_query' also in core/queries/a\.sql"
    ):
        load_queries(tmp_path)


def test_a_schema_file_missing_from_the_order_is_refused(tmp_path: Path) -> None:
    write_tree(tmp_path)
    (tmp_path / "core" / "views.sql").write_text("CREATE VIEW v AS SELECT 1;\n")
    with pytest.raises(QueryError, match=r"core/views\.sql: no '-- name:' header \(a schema"):
        load_queries(tmp_path)


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        ("core/tables.sql\ncore/tables.sql\n", "core/tables.sql listed twice"),
        ("core/tables.sql\ncore/nothing.sql\n", "core/nothing.sql does not exist"),
    ],
)
def test_a_bad_schema_order_is_refused(tmp_path: Path, order: str, reason: str) -> None:
    write_tree(tmp_path)
    (tmp_path / "schema.order").write_text(order)
    with pytest.raises(QueryError) as err:
        schema_files(tmp_path)
    assert str(err.value) == f"schema.order: {reason}"
