"""The SQL of sql/: the schema's files in their order, and the named queries.

sql/schema.order lists the schema's files (tables, views, one file per function) in the
order they are created. Every other .sql file under sql/ (outside sql/migrations) holds
named queries, loaded once at import; each query starts with a header:

    -- name: record_seen_marks
    -- returns: rows (tag text, ...)
    -- purpose: ...

and runs up to the next `-- name:` line. Python code refers to queries by name only, so
`sql/` stays the single place where SQL lives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
SCHEMA_ORDER = SQL_DIR / "schema.order"

_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_ANY_NAME = re.compile(r"^--\s*name:.*$", re.MULTILINE)
_HEADER = re.compile(r"^--\s*(?P<key>returns|purpose):\s*(?P<value>.*)$")


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    returns: str
    purpose: str
    # The text comes from the repository's own files, never from input, which is what the
    # LiteralString type of psycopg's execute() is there to ensure.
    text: LiteralString
    source: str


class QueryError(ValueError):
    pass


def parse_queries(text: str, source: str) -> dict[str, Query]:
    """Split one .sql file into its named queries, checking every header."""
    for line in _ANY_NAME.findall(text):
        # A name line that does not parse would silently glue its query to the previous one.
        if not _NAME.fullmatch(line):
            raise QueryError(f"{source}: bad query name line {line!r} (want [a-z_][a-z0-9_]*)")
    matches = list(_NAME.finditer(text))
    if not matches:
        raise QueryError(f"{source}: no '-- name:' header")
    if text[: matches[0].start()].strip():
        raise QueryError(f"{source}: text before the first '-- name:' header")
    found: dict[str, Query] = {}
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip("\n")
        header: dict[str, list[str]] = {}
        key: str | None = None
        lines = body.splitlines()
        i = 0
        while i < len(lines) and lines[i].startswith("--"):
            head = _HEADER.match(lines[i])
            if head:
                key = head["key"]
                header[key] = [head["value"].strip()]
            elif key is not None:
                header[key].append(lines[i].lstrip("-").strip())
            i += 1
        name = match["name"]
        sql_text = "\n".join(lines[i:]).strip().rstrip(";").strip()
        missing = {k for k in ("returns", "purpose") if not " ".join(header.get(k, [])).strip()}
        if missing:
            raise QueryError(f"{source}: query {name!r} lacks header {sorted(missing)}")
        if not sql_text:
            raise QueryError(f"{source}: query {name!r} has no SQL")
        if name in found:
            raise QueryError(f"{source}: query {name!r} defined twice")
        found[name] = Query(
            name=name,
            returns=" ".join(header["returns"]),
            purpose=" ".join(header["purpose"]),
            text=sql_text,
            source=source,
        )
    return found


def schema_files(directory: Path = SQL_DIR) -> list[Path]:
    """The schema's files in the order of `schema.order` (one path a line, # comments)."""
    files: list[Path] = []
    for line in (directory / SCHEMA_ORDER.name).read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        path = directory / entry
        if path in files:
            raise QueryError(f"{SCHEMA_ORDER.name}: {entry} listed twice")
        if not path.is_file():
            raise QueryError(f"{SCHEMA_ORDER.name}: {entry} does not exist")
        files.append(path)
    return files


def schema_sql(directory: Path = SQL_DIR) -> LiteralString:
    """The whole schema as one script, its files in order (what `upgrade head` must equal)."""
    text = "\n".join(read_sql_file(path) for path in schema_files(directory))
    return text


def query_files(directory: Path = SQL_DIR) -> list[Path]:
    """Every .sql file under `directory` that is neither a migration nor a schema file."""
    skip = set(schema_files(directory)) if (directory / SCHEMA_ORDER.name).exists() else set()
    return sorted(
        path
        for path in directory.rglob("*.sql")
        if path not in skip and path.relative_to(directory).parts[0] != MIGRATIONS_DIR.name
    )


def load_queries(directory: Path = SQL_DIR) -> dict[str, Query]:
    queries: dict[str, Query] = {}
    for path in query_files(directory):
        source = path.relative_to(directory).as_posix()
        text = path.read_text()
        if not _ANY_NAME.search(text):
            # Most likely a schema file that schema.order does not list yet.
            raise QueryError(
                f"{source}: no '-- name:' header (a schema file belongs in {SCHEMA_ORDER.name})"
            )
        for name, query in parse_queries(text, source).items():
            if name in queries:
                raise QueryError(f"{source}: query {name!r} also in {queries[name].source}")
            queries[name] = query
    return queries


QUERIES = load_queries()


def q(name: str) -> LiteralString:
    """The SQL text of a named query; a typo fails loudly at first use in tests."""
    return QUERIES[name].text


def read_sql_file(path: Path) -> LiteralString:
    return path.read_text()
