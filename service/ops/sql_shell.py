"""bin/sql: a SQL shell on bin/dev's database, for analysts.

    bin/sql                                   # psql if installed, else the built-in prompt
    bin/sql -c "SELECT * FROM outbox_consumer_stats"
    bin/sql --builtin                         # the built-in prompt even where psql is
    bin/sql -- -A -t -c "SELECT count(*) FROM seen_marks"   # anything after -- goes to psql

The database is found as the ops commands find it (service/ops/database_target.py):
--database-url, else DATABASE_URL, else the config's database.url (--config, else bin/dev's
config), else the embedded PostgreSQL in .data/pg-dev (started if need be). psql is looked
for on PATH, then in Debian's /usr/lib/postgresql/<version>/bin; MARK_NOTIFY_SQL_BUILTIN=1
forces the built-in prompt.

The built-in prompt runs each statement when its `;` is typed (in autocommit, as psql
does) and prints what it returns as a table. `\\q` (or Ctrl-D) quits, `\\d` lists the tables
and views, `\\d NAME` a table's columns, `\\?` says this. Ctrl-C cancels the statement
running or being typed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from rich.console import Console
from rich.table import Table
from rich.text import Text

from service.database import CONNECTION_OPTIONS
from service.ops import cli
from service.ops.database_target import DatabaseTarget, display_url

PROMPT = "mark-notify=> "
MORE = "mark-notify-> "
# Rows printed per result; the rest are counted, not shown (add a LIMIT to choose).
MAX_ROWS = 500
BUILTIN_ENV = "MARK_NOTIFY_SQL_BUILTIN"
DEBIAN_PSQL = "/usr/lib/postgresql/*/bin/psql"

HELP = """\
Statements run when their ';' is typed, each in its own transaction (BEGIN ... COMMIT
works too).
  \\d          tables and views
  \\d NAME     the columns of a table or view
  \\q          quit (Ctrl-D too)
  \\?          this help
Useful views and tables: outbox_consumer_stats, outbox, delivery_attempts, seen_marks,
events, notifications, audit_log (docs/analytics.md, The tables)."""

TABLES = b"""
SELECT c.relname AS name,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      ELSE 'table' END AS kind,
       obj_description(c.oid, 'pg_class') AS description
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')
ORDER BY c.relname
"""
COLUMNS = b"""
SELECT a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
       CASE WHEN a.attnotnull THEN 'not null' ELSE '' END AS nullable,
       pg_get_expr(d.adbin, d.adrelid) AS default
FROM pg_attribute AS a
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


# -- splitting typed text into statements ---------------------------------------------

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(text: str) -> tuple[list[str], str]:
    """The complete statements in `text` (each up to its `;`, which stays with it), and
    the unfinished rest. A `;` inside quotes, dollar quotes or comments ends nothing."""
    done: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            end = text.find(ch, i + 1)
            # A doubled quote is an escaped one: find() lands on it and the scan goes on.
            i = n if end < 0 else end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == "$" and (tag := _DOLLAR.match(text, i)):
            end = text.find(tag.group(0), tag.end())
            i = n if end < 0 else end + len(tag.group(0))
        elif ch == ";":
            statement = text[start : i + 1].strip()
            if statement != ";":
                done.append(statement)
            start = i = i + 1
        else:
            i += 1
    return done, text[start:]


_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def blank(text: str) -> bool:
    """Nothing but whitespace and comments: no statement under way."""
    return not _COMMENTS.sub("", text).strip()


# -- showing results ------------------------------------------------------------------


def _cell(value: Any) -> Text:
    if value is None:
        return Text("null", style="dim")
    if isinstance(value, dict | list):
        return Text(msgspec.json.encode(value).decode())
    if isinstance(value, bytes | memoryview):
        return Text("\\x" + bytes(value).hex())
    return Text(str(value))


def show(cur: psycopg.Cursor[Any], console: Console) -> None:
    """Every result of the statement(s) just run: a table of rows, or the command tag."""
    while True:
        if cur.description is None:
            console.print(cur.statusmessage or "done")
        else:
            table = Table(*(column.name for column in cur.description), header_style="bold")
            rows = cur.fetchmany(MAX_ROWS)
            for row in rows:
                table.add_row(*(_cell(v) for v in row))
            console.print(table)
            total = cur.rowcount if cur.rowcount >= 0 else len(rows)
            shown = f", the first {len(rows)} shown" if total > len(rows) else ""
            console.print(f"({total} row{'' if total == 1 else 's'}{shown})")
        if not cur.nextset():
            return


def run_statement(
    conn: psycopg.Connection[Any], text: str, console: Console, errors: Console
) -> bool:
    """Run what was typed (one statement, or several for -c) and show it; False on error."""
    try:
        with conn.cursor() as cur:
            # bytes: the text is the user's, not a literal of ours, and with no parameters
            # a '%' in it is just a '%'.
            cur.execute(text.encode())
            show(cur, console)
    except psycopg.Error as exc:
        errors.print(Text(f"ERROR: {exc}".rstrip(), style="red"))
        return False
    except KeyboardInterrupt:
        # psycopg has asked the server to cancel the statement.
        errors.print(Text("cancelled", style="yellow"))
        return False
    return True


def meta(conn: psycopg.Connection[Any], command: str, console: Console) -> bool:
    """A backslash command; False to quit."""
    name, _, argument = command.strip().partition(" ")
    if name in ("\\q", "\\quit"):
        return False
    if name == "\\d":
        with conn.cursor() as cur:
            if argument.strip():
                cur.execute(COLUMNS, [argument.strip()])
            else:
                cur.execute(TABLES)
            if argument.strip() and cur.rowcount == 0:
                console.print(f"no table or view named {argument.strip()!r}")
            else:
                show(cur, console)
    elif name == "\\?":
        console.print(HELP, markup=False, highlight=False)
    else:
        console.print(f"unknown command {name}; \\? lists them", markup=False)
    return True


def _read_line(interactive: bool, pending: bool) -> str:
    """One line of input (the prompt says whether a statement is under way)."""
    if interactive:
        return input(MORE if pending else PROMPT)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def prompt(conn: psycopg.Connection[Any], console: Console, errors: Console) -> int:
    """The built-in prompt: statements from the terminal (or piped in) until \\q or EOF."""
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (gives input() line editing and history)
        except ImportError:
            pass
        console.print("mark-notify SQL (built-in prompt). \\? for help, \\q to quit.")
    buffer = ""
    failed = False
    while True:
        try:
            line = _read_line(interactive, not blank(buffer))
        except EOFError:
            if interactive:
                console.print()
            break
        except KeyboardInterrupt:
            console.print()
            buffer = ""
            continue
        if blank(buffer) and line.strip().startswith("\\"):
            if not meta(conn, line, console):
                break
            continue
        statements, buffer = split_statements(f"{buffer}{line}\n")
        for statement in statements:
            failed = not run_statement(conn, statement, console, errors) or failed
        if blank(buffer):
            buffer = ""
    if not blank(buffer):
        # Piped input may end without a final ';'.
        failed = not run_statement(conn, buffer, console, errors) or failed
    return 1 if failed and not interactive else 0


# -- psql -----------------------------------------------------------------------------


def find_psql() -> str | None:
    """psql on PATH, else the newest of Debian's versioned ones."""
    found = shutil.which("psql")
    if found:
        return found

    def version(path: Path) -> tuple[int, ...]:
        number = path.parent.parent.name
        return tuple(int(p) for p in number.split(".") if p.isdigit())

    installed = sorted(Path("/").glob(DEBIAN_PSQL.lstrip("/")), key=version, reverse=True)
    return str(installed[0]) if installed else None


def run_psql(psql: str, target: DatabaseTarget, args: Sequence[str]) -> int:
    argv = [psql, target.url, *args]
    if not target.embedded:
        os.execv(psql, argv)  # noqa: S606 (our own argv: psql and its arguments)
    # The embedded server counts this process as one of its users until it exits (see
    # service/database.py): psql runs as a child, so that this process does exit.
    # Ctrl-C is psql's (it cancels the query); here it must not end the wait.
    signal.signal(signal.SIGINT, lambda *_: None)
    return subprocess.call(argv)  # noqa: S603 (our own argv)


# -- the command ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = cli.command_parser(
        "bin/sql",
        "A SQL shell on bin/dev's database (psql, else a built-in prompt).",
        cli.epilog(__doc__),
    )
    parser.add_argument("-c", "--command", help="run this SQL, print the result, and exit")
    parser.add_argument(
        "--builtin", action="store_true", help=f"the built-in prompt, not psql ({BUILTIN_ENV}=1)"
    )
    return parser


def parse(argv: list[str] | None) -> cli.Command:
    """The command line; what psql is to get besides (after `--`) in `args.psql_args`."""
    chosen = parser()
    args, extra = chosen.parse_known_args(argv)
    args.psql_args = extra[1:] if extra and extra[0] == "--" else extra
    return cli.Command("sql", args)


def run(command: cli.Command) -> int:
    """Synchronous, the one command that is: an interactive shell, where Ctrl-C must reach
    psycopg's wait (which cancels the statement) rather than an event loop."""
    args, extra = command.args, command.args.psql_args
    builtin = args.builtin or os.environ.get(BUILTIN_ENV, "") not in ("", "0")
    psql = None if builtin else find_psql()
    if extra and psql is None:
        raise cli.Failed(f"{' '.join(extra)}: only psql takes more arguments")
    target = command.database()
    errors = Console(stderr=True, highlight=False)
    if psql is not None:
        if args.command is None:
            errors.print(Text(f"{target.source}: {display_url(target.url)}", style="dim"))
        return run_psql(psql, target, [*extra, *(["-c", args.command] if args.command else [])])
    # Piped output is not folded to 80 columns: it goes to files and other programs.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
    with psycopg.connect(
        target.url,
        autocommit=True,
        options=CONNECTION_OPTIONS,
        application_name="mark-notify-sql",
    ) as conn:
        if args.command is not None:
            ok = run_statement(conn, args.command, console, errors)
            return cli.OK if ok else cli.FAILED
        if sys.stdin.isatty():
            errors.print(Text(f"{target.source}: {display_url(target.url)}", style="dim"))
        return prompt(conn, console, errors)


def main(argv: list[str] | None = None) -> int:
    return cli.run(parse(argv), run)


if __name__ == "__main__":
    cli.exit_with(main)
