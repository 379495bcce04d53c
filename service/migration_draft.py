"""Draft a new Alembic revision from the current files of sql/, so no rule is typed twice.

    python -m service.migration_draft SLUG NAME [NAME ...] [--message TEXT]

NAME is a function, procedure or view. The tool writes
- sql/migrations/NNNN_SLUG.up.sql: each object as its file under sql/ defines it now;
- sql/migrations/NNNN_SLUG.down.sql: each object as the revisions before left it (its
  latest definition in an earlier *.up.sql), or dropped if none of them made it;
- alembic/versions/NNNN_SLUG.py: the revision that runs them, after the current head.
Up, a view is replaced in place (its grants stay), so its columns may only be added at the
end; down, it is dropped and made again, with the views built on it. A table changes by
ALTER, which no file holds: write it into the drafted files by hand.
The drafts become frozen copies once released; review them like any code.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from service.config.base import ROOT

# What lexing needs to find the statements' ends: comments, quoted text and dollar-quoted
# bodies (which hold semicolons), and the semicolons themselves.
_TOKEN = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\""
    r"|\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$|;",
    re.DOTALL,
)
_CREATE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?P<kind>FUNCTION|PROCEDURE|VIEW)\s+(?P<name>\w+)",
    re.IGNORECASE,
)
_DROP = re.compile(
    r"^\s*DROP\s+(?P<kind>FUNCTION|PROCEDURE|VIEW)\s+(?:IF\s+EXISTS\s+)?(?P<name>\w+)",
    re.IGNORECASE,
)
# Where a function's signature ends and its attributes begin (CREATE OR REPLACE can
# change those, not the arguments or the result).
_ATTRIBUTE = re.compile(
    r"\b(LANGUAGE|AS|IMMUTABLE|STABLE|VOLATILE|STRICT|CALLED|SECURITY|PARALLEL|COST|ROWS"
    r"|SET|SUPPORT|WINDOW|LEAKPROOF|NOT|TRANSFORM|BEGIN)\b",
    re.IGNORECASE,
)
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")


class DraftError(ValueError):
    pass


def strip_comments(text: str) -> str:
    return _TOKEN.sub(lambda m: " " if m.group().startswith(("--", "/*")) else m.group(), text)


def split_statements(text: str) -> list[str]:
    """The statements of an SQL script, each with the comment lines right above it."""
    statements: list[str] = []
    start = 0
    for match in _TOKEN.finditer(text):
        if match.group() == ";":
            statements.append(_with_own_comment(text[start : match.end()]))
            start = match.end()
    if strip_comments(text[start:]).strip():
        statements.append(_with_own_comment(text[start:]))
    return statements


def _with_own_comment(chunk: str) -> str:
    lines = chunk.strip("\n").splitlines()
    first = next(n for n, line in enumerate(lines) if line.strip() and not _is_comment(line))
    while first > 0 and _is_comment(lines[first - 1]):
        first -= 1
    return "\n".join(lines[first:]).strip()


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("--")


@dataclass(frozen=True, slots=True)
class Definition:
    kind: str  # FUNCTION, PROCEDURE or VIEW
    name: str
    text: str
    source: str

    def created_or_replaced(self) -> str:
        code = strip_comments(self.text)
        match = _CREATE.match(code)
        assert match
        # The statement's own comment stays; only its first CREATE is rewritten.
        offset = len(self.text) - len(self.text.lstrip()) + _leading_comment_length(self.text)
        head, rest = self.text[:offset], self.text[offset:]
        create = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?", re.IGNORECASE)
        return head + create.sub("CREATE OR REPLACE ", rest, count=1)

    def signature(self) -> str:
        """Name, arguments and result, normalized (what CREATE OR REPLACE cannot change)."""
        if self.kind == "VIEW":
            return self.name
        code = strip_comments(self.text)
        match = _CREATE.match(code)
        assert match
        rest = code[match.end() :]
        args_end = _closing_paren(rest)
        tail = rest[args_end:]
        # The first attribute outside parentheses (RETURNS TABLE (...) names columns).
        ends = [m.start() for m in _ATTRIBUTE.finditer(tail) if _balanced(tail[: m.start()])]
        result = tail[: ends[0]] if ends else tail
        signature = " ".join(f"{self.name}{rest[:args_end]} {result}".lower().split())
        return re.sub(r"\s*([(),])\s*", r"\1", signature)

    def drop(self, if_exists: bool = False) -> str:
        exists = "IF EXISTS " if if_exists else ""
        if self.kind == "VIEW":
            return f"DROP VIEW {exists}{self.name};"
        code = strip_comments(self.text)
        match = _CREATE.match(code)
        assert match
        rest = code[match.end() :]
        inner = rest[rest.index("(") + 1 : _closing_paren(rest) - 1]
        # DROP takes mode, name and type of each argument, but no default.
        default = re.compile(r"\s+(?:DEFAULT\b|=).*$", re.IGNORECASE | re.DOTALL)
        args = ", ".join(default.sub("", " ".join(a.split())) for a in _top_level_split(inner))
        return f"DROP {self.kind} {exists}{self.name}({args});"


def _leading_comment_length(text: str) -> int:
    stripped = text.lstrip()
    length = 0
    for line in stripped.splitlines(keepends=True):
        if not _is_comment(line) and line.strip():
            break
        length += len(line)
    return length


def _balanced(text: str) -> bool:
    return text.count("(") == text.count(")")


def _closing_paren(text: str) -> int:
    """The index just past the parenthesis that closes the first one in `text`."""
    depth = 0
    for n, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return n + 1
    raise DraftError(f"no closing parenthesis in {text[:60]!r}")


def _top_level_split(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    for n, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:n])
            start = n + 1
    if text[start:].strip():
        parts.append(text[start:])
    return parts


def _definitions(text: str, source: str) -> list[Definition]:
    found = []
    for statement in split_statements(text):
        match = _CREATE.match(strip_comments(statement))
        if match:
            kind = match["kind"].upper()
            found.append(Definition(kind, match["name"].lower(), statement, source))
    return found


def schema_position(root: Path) -> list[Definition]:
    """Every function, procedure and view sql/ declares, in schema.order's order."""
    from service.sql import schema_files

    sql_dir = root / "sql"
    return [
        definition
        for path in schema_files(sql_dir)
        for definition in _definitions(path.read_text(), path.relative_to(root).as_posix())
    ]


def current_definition(root: Path, name: str) -> Definition:
    found = [d for d in schema_position(root) if d.name == name.lower()]
    if not found:
        raise DraftError(f"{name}: no function, procedure or view of that name in sql/")
    if len(found) > 1:
        raise DraftError(f"{name}: defined in {', '.join(d.source for d in found)}")
    return found[0]


def previous_definition(root: Path, name: str) -> Definition | None:
    """The object as the released revisions left it: its latest definition in their
    up-migrations, or None if none made it (or the last one dropped it)."""
    latest: Definition | None = None
    for path in sorted((root / "sql" / "migrations").glob("*.up.sql")):
        source = path.relative_to(root).as_posix()
        for statement in split_statements(path.read_text()):
            code = strip_comments(statement)
            created, dropped = _CREATE.match(code), _DROP.match(code)
            if created and created["name"].lower() == name.lower():
                latest = Definition(created["kind"].upper(), name.lower(), statement, source)
            elif dropped and dropped["name"].lower() == name.lower():
                latest = None
    return latest


def head_revision(root: Path) -> tuple[str, int]:
    """The current head revision of alembic/versions and the highest revision number."""
    revisions: dict[str, str | None] = {}
    for path in (root / "alembic" / "versions").glob("*.py"):
        text = path.read_text()
        rev = re.search(r'^revision = "([^"]+)"', text, re.MULTILINE)
        down = re.search(r'^down_revision = (?:"([^"]+)"|None)', text, re.MULTILINE)
        if rev and down:
            revisions[rev[1]] = down[1]
    heads = set(revisions) - set(revisions.values())
    if len(heads) != 1:
        raise DraftError(f"alembic/versions has heads {sorted(heads)}, want one")
    numbers = [int(r[:4]) for r in revisions if r[:4].isdigit()]
    return heads.pop(), max(numbers, default=0)


def _with_dependants(root: Path, views: list[Definition]) -> list[Definition]:
    """These views and every view of sql/ built on them, in schema order."""
    names = {v.name for v in views}
    found: list[Definition] = []
    for definition in schema_position(root):
        code = strip_comments(definition.text)
        if definition.kind == "VIEW" and (
            definition.name in names
            or any(re.search(rf"\b{name}\b", code) for name in {d.name for d in found})
        ):
            found.append(definition)
    return found


@dataclass(frozen=True, slots=True)
class Draft:
    revision: str
    up: Path
    down: Path
    module: Path


def draft(root: Path, slug: str, names: list[str], message: str | None = None) -> Draft:
    if not _SLUG.match(slug):
        raise DraftError(f"slug {slug!r}: want [a-z][a-z0-9_]*")
    if not names:
        raise DraftError("name at least one function, procedure or view")
    order = [d.name for d in schema_position(root)]
    current = sorted(
        (current_definition(root, n) for n in set(names)), key=lambda d: order.index(d.name)
    )
    down_revision, number = head_revision(root)
    revision = f"{number + 1:04d}_{slug}"
    listed = ", ".join(d.name for d in current)

    up = [
        f"-- {revision}: {listed}, as sql/ defines them now.",
        "-- Drafted by `python -m service.migration_draft`; frozen once released: a later change",
        "-- goes into a new revision (drafted the same way).",
    ]
    down = [f"-- {revision} down: {listed}, as {down_revision} left them."]
    for now in current:
        before = previous_definition(root, now.name)
        changed = before is not None and before.signature() != now.signature()
        up.append("")
        up.append(f"-- From {now.source}.")
        if changed:
            assert before is not None
            up.append(before.drop())
        up.append(now.created_or_replaced())
    # A view's columns may have changed, which CREATE OR REPLACE cannot undo: the views
    # go and come back (with the views built on them), around the functions they may use.
    views = _with_dependants(root, [d for d in current if d.kind == "VIEW"])
    if views:
        down += ["", *(view.drop(if_exists=True) for view in reversed(views))]
    for now in reversed([d for d in current if d.kind != "VIEW"]):
        before = previous_definition(root, now.name)
        down.append("")
        if before is None:
            down.append(now.drop(if_exists=True))
            continue
        down.append(f"-- From {before.source}.")
        if before.signature() != now.signature():
            down.append(now.drop())
        down.append(before.created_or_replaced())
    for view in views:
        before = previous_definition(root, view.name)
        if before is not None:
            down += ["", f"-- From {before.source}.", before.created_or_replaced()]

    migrations = root / "sql" / "migrations"
    paths = Draft(
        revision=revision,
        up=migrations / f"{revision}.up.sql",
        down=migrations / f"{revision}.down.sql",
        module=root / "alembic" / "versions" / f"{revision}.py",
    )
    for path in (paths.up, paths.down, paths.module):
        if path.exists():
            raise DraftError(f"{path} exists")
    paths.up.write_text("\n".join(up) + "\n")
    paths.down.write_text("\n".join(down) + "\n")
    paths.module.write_text(
        _module(revision, down_revision, message or f"{listed}, from their files in sql/.")
    )
    return paths


def _module(revision: str, down_revision: str, message: str) -> str:
    return f'''"""{message}

Revision ID: {revision}
Revises: {down_revision}
"""

from __future__ import annotations

from service.migrate import execute_file

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_file("{revision}.up.sql")


def downgrade() -> None:
    execute_file("{revision}.down.sql")
'''


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Draft a revision of functions, procedures or views from sql/."
    )
    parser.add_argument("slug", help="the revision's name after its number, e.g. quiet_hours")
    parser.add_argument("names", nargs="+", metavar="NAME", help="function, procedure or view")
    parser.add_argument("--message", help="the revision's one-line description")
    args = parser.parse_args(argv)
    try:
        made = draft(ROOT, args.slug, args.names, args.message)
    except DraftError as err:
        raise SystemExit(f"migration_draft: {err}") from None
    for path in (made.up, made.down, made.module):
        print(f"wrote {path.relative_to(ROOT)}")
    print(
        f"next: review them; add {made.revision} to REVISIONS in"
        " tests/integration/test_migrations.py and to the alembic/ row of docs/architecture.md"
    )


if __name__ == "__main__":
    main()
