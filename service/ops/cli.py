"""How every bin/ command is built: one parser shape, one entry, one set of exit codes.

A command module (bin/admin, bin/apikey, bin/redeliver, bin/schedules, bin/sql, bin/token,
bin/vapid) builds its parser with `command_parser` and has one `run(command)`, async when
it talks to the database, which returns the exit code; its `main(argv)` is
`cli.main(parser, run, argv)`, and `python -m` runs `cli.exit_with(main)`.

- Options: `--config FILE` and `--database-url URL` on every command that has a database,
  found as bin/dev finds them (service/ops/database_target.py).
- Exit codes: 0 done; 1 failed; 2 a usage error, a broken config or a name that does not
  exist (argparse's own code for bad options, too); 141 when the reader of the output went
  away. Messages go to stderr and start with the command's name: `redeliver: ...`.
- Changes are audited (service/audit.py) with the actor `cli:<os user>`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from psycopg import AsyncConnection

from service.config.base import ConfigError
from service.config.load import Config
from service.database import CONNECTION_OPTIONS
from service.ops.database_target import (
    DatabaseNotFound,
    DatabaseTarget,
    load_cli_config,
    resolve_database,
)

OK = 0
FAILED = 1
USAGE = 2
# What a shell reports for a command that a closed pipe stopped (128 + SIGPIPE).
BROKEN_PIPE_EXIT = 141

CONFIG_HELP = "default: MARK_NOTIFY_CONFIG, else config/mark-notify.toml, else config/example.toml"
DATABASE_HELP = "default: DATABASE_URL, else the config's, else bin/dev's"


class Usage(Exception):
    """Ends the command with exit code 2 and this message."""


class Failed(Exception):
    """Ends the command with exit code 1 and this message."""


def cli_actor() -> str:
    """The audit actor of a command run from a shell: the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def epilog(doc: str | None, paragraphs: int | None = None) -> str | None:
    """A module docstring past its first paragraph (or only the next `paragraphs`), for
    --help."""
    if not doc:
        return None
    rest = doc.split("\n\n")[1:]
    return "\n\n".join(rest if paragraphs is None else rest[:paragraphs])


def command_parser(
    prog: str, description: str, epilog: str | None = None, *, database: bool = True
) -> argparse.ArgumentParser:
    """The parser of `bin/<name>`, with --config and --database-url if it has a database."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog,
    )
    if database:
        parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
        parser.add_argument("--database-url", metavar="URL", help=DATABASE_HELP)
    return parser


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command line, and what a command reaches through it."""

    # bin/<name>; its messages start with `<name>: `.
    name: str
    args: argparse.Namespace

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment, with --config in MARK_NOTIFY_CONFIG when given."""
        chosen = getattr(self.args, "config", None)
        return os.environ if not chosen else {**os.environ, "MARK_NOTIFY_CONFIG": chosen}

    @property
    def actor(self) -> str:
        return cli_actor()

    def config(self) -> Config:
        """bin/dev's config; a broken one ends the command (exit 2)."""
        try:
            return load_cli_config(self.environ)
        except ConfigError as exc:
            raise Usage(str(exc)) from None

    def database(self, config: Config | None = None) -> DatabaseTarget:
        """bin/dev's database (the embedded one started and migrated if it is the one);
        none to be had ends the command (exit 1)."""
        try:
            return resolve_database(
                getattr(self.args, "database_url", None), environ=self.environ, config=config
            )
        except DatabaseNotFound as exc:
            raise Failed(str(exc)) from None

    @asynccontextmanager
    async def connect(
        self, url: str, **options: Any
    ) -> AsyncIterator[AsyncConnection[tuple[Any, ...]]]:
        """An autocommit connection: each change is its own transaction."""
        async with await AsyncConnection.connect(
            url, autocommit=True, options=CONNECTION_OPTIONS, **options
        ) as conn:
            yield conn


Run = Callable[[Command], Coroutine[Any, Any, int] | int]
Errors = tuple[type[Exception], ...]


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> Command:
    return Command(parser.prog.removeprefix("bin/"), parser.parse_args(argv))


def run(command: Command, body: Run, *, usage: Errors = (), failed: Errors = ()) -> int:
    """Run the command (an async one in its own event loop) and give its exit code; the
    errors in `usage` end it with 2, those in `failed` with 1, each with its message."""
    usage_errors: Errors = (Usage, *usage)
    failed_errors: Errors = (Failed, *failed)
    try:
        outcome = body(command)
        return outcome if isinstance(outcome, int) else asyncio.run(outcome)
    except usage_errors as exc:
        _say(command.name, exc)
        return USAGE
    except failed_errors as exc:
        _say(command.name, exc)
        return FAILED


def main(
    parser: argparse.ArgumentParser,
    body: Run,
    argv: list[str] | None = None,
    *,
    usage: Errors = (),
    failed: Errors = (),
) -> int:
    """Parse `argv` and run the command: a command module's main()."""
    return run(parse(parser, argv), body, usage=usage, failed=failed)


def _say(name: str, exc: Exception) -> None:
    print(f"{name}: {exc}", file=sys.stderr)


def exit_with(main: Callable[[], int | None]) -> NoReturn:
    """Run a command's main() and exit with its code; quietly when the reader of its output
    went away (`bin/schedules list | head -1`), as `ls` does, not with a traceback."""
    try:
        code = main()
        # Inside the try: piped output is buffered, so the pipe may break only here.
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be written; point stdout at /dev/null so the interpreter's own
        # flush at exit does not fail again with "Exception ignored".
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(BROKEN_PIPE_EXIT)
    sys.exit(code)
