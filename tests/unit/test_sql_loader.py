"""Named queries: every query in sql/queries is documented, and bad files are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.sql import QUERIES, QUERIES_DIR, Query, QueryError, load_queries, parse_queries, q

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
    files = sorted(QUERIES_DIR.glob("*.sql"))
    assert files, "sql/queries has no .sql files"
    declared = []
    for path in files:
        names = re.findall(r"^--\s*name:\s*(\S+)", path.read_text(), flags=re.MULTILINE)
        assert names, f"{path.name} has no named query"
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
