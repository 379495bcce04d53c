"""bin/sql: one command to a SQL shell on bin/dev's database, psql or the built-in prompt."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from service.config.base import ROOT
from service.ops.sql_shell import find_psql, split_statements


def bin_sql(
    db_url: str, *args: str, stdin: str | None = None, builtin: bool = True
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": db_url}
    if builtin:
        env["MARK_NOTIFY_SQL_BUILTIN"] = "1"
    else:
        env.pop("MARK_NOTIFY_SQL_BUILTIN", None)
    return subprocess.run(
        [str(ROOT / "bin" / "sql"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_one_statement_with_c_prints_its_rows_as_a_table(db_url: str) -> None:
    ran = bin_sql(db_url, "-c", "select 1 as one, 'a;b' as two, null as three")
    assert ran.returncode == 0, ran.stderr
    # Rich's table: ┃ between the header's cells, │ between the rows'.
    header, row = [
        re.split("[┃│]", line)[1:4]
        for line in ran.stdout.splitlines()
        if "one" in line or "a;b" in line
    ]
    assert [cell.strip() for cell in header] == ["one", "two", "three"]
    assert [cell.strip() for cell in row] == ["1", "a;b", "null"]
    assert "(1 row)" in ran.stdout


def test_a_bad_statement_says_why_and_fails(db_url: str) -> None:
    ran = bin_sql(db_url, "-c", "select nope from outbox")
    assert ran.returncode == 1
    assert 'ERROR: column "nope" does not exist' in ran.stderr


def test_the_prompt_runs_each_statement_at_its_semicolon(db_url: str) -> None:
    script = (
        "select count(*) as marks\n"
        "  from seen_marks;\n"
        "insert into audit_log (actor, action) values ('cli:test', 'x;y');\n"
        "select action from audit_log; select $$a;b$$ as dollar; -- a comment; still one\n"
        "\\d outbox_consumer_stats\n"
        "\\q\n"
        "select 'after quit';\n"
    )
    ran = bin_sql(db_url, stdin=script)
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout
    assert "marks" in out and "INSERT 0 1" in out and "x;y" in out and "a;b" in out
    # \d lists the view's columns, the failed one among them.
    assert "oldest_pending_at" in out and " failed " in out
    assert "after quit" not in out


def test_statements_split_at_semicolons_outside_quotes_and_comments() -> None:
    done, rest = split_statements(
        "select 'it''s;'; select \"a;b\" from t; select $f$ ; $f$; /* ; */ select 1 -- ;\n; sel"
    )
    assert done == [
        "select 'it''s;';",
        'select "a;b" from t;',
        "select $f$ ; $f$;",
        "/* ; */ select 1 -- ;\n;",
    ]
    assert rest == " sel"
    assert split_statements(";;") == ([], "")
    assert split_statements("select 'open;") == ([], "select 'open;")


@pytest.mark.skipif(find_psql() is None, reason="psql is not installed here")
def test_with_psql_installed_it_is_psql(db_url: str) -> None:
    ran = bin_sql(db_url, "-c", "select 40 + 2 as answer", builtin=False)
    assert ran.returncode == 0, ran.stderr
    # psql's own aligned format, not the built-in table.
    assert "answer" in ran.stdout and "42" in ran.stdout and "(1 row)" in ran.stdout
    assert "┃" not in ran.stdout
