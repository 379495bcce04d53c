"""Every path, module and function the docs name exists, so a pointer cannot go stale.

Read: README.md, CONTRIBUTING.md, docs/*.md and the comments of bin/* scripts. Checked:
- repository paths (`service/...`, `sql/<area>/functions/x.sql`, `bin/x`, `docs/x.md`,
  `tests/...`, ...): each segment exists, up to the first placeholder (`<area>`, `NNNN`,
  `*`, `...`), which stands for any name;
- relative Markdown links, and their `#anchor` when they point at a Markdown heading;
- modules (`service.x.y`, `dispatcher.x`, `python -m bench.x`): the module exists, and a
  name after it (`service.sql.schema_sql`) is defined in it, or is a config key
  (`dispatcher.sweep_interval`);
- functions written `name()`: when a file is named right before them (`` `x.py`,
  `name()` `` or `(x.py, name)`) they are defined in that file; otherwise anywhere in the
  code (a Python def or class) or in sql/ (a function or procedure).
"""

from __future__ import annotations

import builtins
import functools
import re
from pathlib import Path

import pytest

from service.config.base import ROOT

TOP = r"(?:service|dispatcher|sql|bin|docs|tests|bench|config|alembic|\.ci)"
# A path starts at a top-level folder (not inside a URL or another path) and runs on
# through path characters; placeholders (<area>, {id}, …) are part of it.
PATH = re.compile(rf"(?<![\w/.:-]){TOP}/[\w./<>*{{}}…-]*")
MODULE = re.compile(r"(?<![\w/.-])(?:service|dispatcher|tests|bench)(?:\.[A-Za-z_]\w*)+")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(\)")
# A file, then the function it holds: `x.py`, `name()`  or  (x.py, name)
PAIR = re.compile(
    rf"(?<![\w/.-])({TOP}/[\w./-]+\.(?:py|sql))`?,[ \t]*`?([A-Za-z_]\w*)(?:\(\)`?|(?=\)))"
)
# Paths the docs name that a checkout does not have, and why.
OPTIONAL = {"config/mark-notify.toml": "an operator's own config, read when it exists"}
PLACEHOLDER = re.compile(r"[<>*{}…]|\.\.\.|[A-Z]{3,}|^[A-Z]$")
# Python's, PostgreSQL's and PromQL's own functions, which the docs name in passing.
BUILTINS = set(dir(builtins)) | {
    "now",
    "count",
    "least",
    "greatest",
    "coalesce",
    "nextval",
    "gen_random_uuid",
    "pg_notify",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_current_snapshot",
    "date_trunc",
    "percentile_cont",
    "array_agg",
    "jsonb_to_recordset",
    "unnest",
    # Citus' own, for adding a worker (docs/scaling.md).
    "citus_rebalance_start",
    "undistribute_table",
    "citus_rebalance_status",
}
CODE_DIRS = ("service", "dispatcher", "tests", "bench", "alembic")


def documents() -> list[Path]:
    docs = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    scripts = sorted(p for p in (ROOT / "bin").iterdir() if p.is_file())
    return [p for p in docs + scripts if p.exists()]


def text_of(path: Path) -> str:
    """A document's text; of a bin/ script, only its comments."""
    text = path.read_text()
    if path.parent.name != "bin":
        return text
    return "\n".join(
        line.lstrip()[1:]
        for line in text.splitlines()
        if line.lstrip().startswith("#") and not line.startswith("#!")
    )


def path_exists(mention: str) -> bool:
    """Each segment exists up to the first placeholder, which may stand for anything."""
    if mention.rstrip(".,:;") in OPTIONAL:
        return True
    here = ROOT
    for segment in mention.rstrip(".,:;").split("/"):
        if not segment:
            continue
        if (here / segment).exists():
            here = here / segment
        elif PLACEHOLDER.search(segment):
            return True
        else:
            return False
    return True


@functools.cache
def code_files() -> tuple[Path, ...]:
    return tuple(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


@functools.cache
def sql_files() -> tuple[Path, ...]:
    return tuple(p for p in (ROOT / "sql").rglob("*.sql") if "migrations" not in p.parts)


def defines(path: Path, name: str) -> bool:
    text = path.read_text()
    if path.suffix == ".sql":
        pattern = rf"CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|VIEW)\s+{name}\b"
        return re.search(pattern, text, re.IGNORECASE) is not None
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{name}\b|^{name}\s*[:=]"
    return re.search(pattern, text, re.MULTILINE) is not None


def names(path: Path, name: str) -> bool:
    """The file defines, imports or calls it: what a doc pointing there means."""
    return re.search(rf"\b{name}\b", path.read_text()) is not None


@functools.cache
def defined_anywhere(name: str) -> bool:
    """A def, class or SQL function of that name, or one the code imports (a library's)."""
    imported = rf"^\s*from\s+[\w.]+\s+import\s+(?:\(\s*)?(?:[\w\s,]*[\s,])?{name}\b"
    return any(defines(p, name) for p in (*code_files(), *sql_files())) or any(
        re.search(imported, p.read_text(), re.MULTILINE) for p in code_files()
    )


@functools.cache
def spelled_in_code(text: str) -> bool:
    """A dotted name the code writes as a string: a logger's or a task's name."""
    return any(f'"{text}"' in p.read_text() for p in code_files())


@functools.cache
def config_key(name: str) -> bool:
    """A field of a config section's Struct (service/config/)."""
    pattern = rf"^\s+{name}\s*:"
    return any(
        re.search(pattern, p.read_text(), re.MULTILINE)
        for p in (ROOT / "service" / "config").glob("*.py")
    )


def module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    here = ROOT / parts[0]
    for n, part in enumerate(parts[1:], start=1):
        if (here / part).is_dir():
            here = here / part
        elif (here / f"{part}.py").is_file():
            here = here / f"{part}.py"
        else:
            # What follows a module is a name it defines; after a package, a config key
            # (`dispatcher.sweep_interval` is [dispatcher].sweep_interval) also reads so.
            module = here / "__init__.py" if here.is_dir() else here
            return module.is_file() and (defines(module, part) or (n == 1 and config_key(part)))
        if here.is_file():
            rest = parts[n + 1 :]
            return not rest or defines(here, rest[0])
    return True


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


def link_problem(document: Path, target: str) -> str | None:
    if re.match(r"[a-z]+:", target):
        return None
    file, _, anchor = target.partition("#")
    resolved = (document.parent / file).resolve() if file else document
    if not resolved.exists():
        return f"link to a missing file: {target}"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"link to a missing heading: {target}"
    return None


def problems(document: Path) -> list[str]:
    text = text_of(document)
    found: list[str] = []
    for mention in sorted(set(PATH.findall(text))):
        if not path_exists(mention):
            found.append(f"no such path: {mention}")
    for dotted in sorted(set(MODULE.findall(text))):
        if not module_exists(dotted) and not spelled_in_code(dotted):
            found.append(f"no such module or name: {dotted}")
    if document.suffix == ".md":
        for target in sorted(set(LINK.findall(text))):
            problem = link_problem(document, target)
            if problem:
                found.append(problem)
    paired: set[str] = set()
    for file, name in PAIR.findall(text):
        paired.add(name)
        if (ROOT / file).is_file() and not names(ROOT / file, name):
            found.append(f"{name} is not in {file}")
    for name in sorted(set(CALL.findall(text)) - paired):
        if name not in BUILTINS and not defined_anywhere(name):
            found.append(f"no function {name}() in the code or in sql/")
    return found


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_what_a_document_names_exists(document: Path) -> None:
    found = problems(document)
    assert not found, f"{document.relative_to(ROOT)}:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for() -> None:
    assert path_exists("sql/<area>/functions/")
    assert path_exists("sql/migrations/NNNN_quiet_hours.up.sql")
    assert path_exists("dispatcher/retry.py")
    assert not path_exists("dispatcher/retries.py")
    assert not path_exists("sql/notify/functions/nothing_here.sql")
    assert module_exists("service.sql.schema_sql")
    assert module_exists("dispatcher.sweep_interval")
    assert not module_exists("service.no_such_module")
    assert not module_exists("service.sql.no_such_name")
    assert defines(ROOT / "dispatcher" / "retry.py", "retry_delay")
    assert defines(
        ROOT / "sql" / "notify" / "functions" / "notify_suppression.sql", "notify_suppression"
    )
    assert not defined_anywhere("surely_no_function_has_this_name")
    assert PAIR.findall("(service/ops/x.py, resolve)") == [("service/ops/x.py", "resolve")]
    assert PAIR.findall("`dispatcher/retry.py`, `schedule()`") == [
        ("dispatcher/retry.py", "schedule")
    ]
    assert PATH.findall("http://h/docs/x.md and /v1/seen") == []
    assert slug("Changing a rule: one file") == "changing-a-rule-one-file"
