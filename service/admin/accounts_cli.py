"""bin/admin: accounts of the web admin panel.

    bin/admin create-user alice --role manager     # asks for the password twice
    bin/admin create-user ops1 --role operator --password-stdin < secret.txt
    bin/admin set-password alice
    bin/admin disable alice                        # her sessions end at once
    bin/admin enable alice
    bin/admin unlock alice                         # after too many failed sign-ins
    bin/admin list

Without a terminal (a script, CI, a container) there is nobody to ask: give the password
on stdin with --password-stdin. Roles: `manager` (mailings, schedules and every read-only
page) and `operator` (all that, plus redeliver, consumer pause/resume and provider
switches). Passwords need at least 12 characters and are stored as argon2id hashes. A
name locked after failed sign-ins ([admin].max_failures) stays locked for
[admin].lockout unless unlocked. Every change is written to audit_log with the actor
`cli:<os user>`. The config and the database are bin/dev's (--config, --database-url).
"""

from __future__ import annotations

import argparse
import getpass
import shlex
import sys

from rich.console import Console
from rich.table import Table

from service.admin.accounts import (
    AccountError,
    create_user,
    list_users,
    set_disabled,
    set_password,
    unlock,
)
from service.admin.passwords import WeakPassword, check_strength
from service.ops import cli


def parser() -> argparse.ArgumentParser:
    parser = cli.command_parser(
        "bin/admin", "Manage the admin panel's accounts.", cli.epilog(__doc__)
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-user", help="make an account")
    create.add_argument("username")
    create.add_argument("--role", choices=["manager", "operator"], required=True)
    create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    password = commands.add_parser("set-password", help="change an account's password")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    for name, text in (
        ("disable", "stop an account, ending its sessions"),
        ("enable", "undo"),
        ("unlock", "end a sign-in lock after failed sign-ins"),
    ):
        commands.add_parser(name, help=text).add_argument("username")
    commands.add_parser("list", help="every account")
    return parser


def _no_terminal(args: argparse.Namespace) -> str:
    role = f" --role {args.role}" if args.command == "create-user" else ""
    example = f"bin/admin {args.command} {shlex.quote(args.username)}{role}"
    return (
        "no terminal to ask for the password on: give it on stdin with "
        f"--password-stdin, e.g. {example} --password-stdin < password.txt"
    )


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        # getpass would fall back to stdin and die on its end (EOFError): say what to do.
        raise cli.Usage(_no_terminal(args))
    try:
        first = getpass.getpass("Password: ")
        check_strength(first)
        if getpass.getpass("Again: ") != first:
            raise cli.Failed("the passwords differ")
    except EOFError:
        # The terminal's input ended (Ctrl-D) at the prompt.
        raise cli.Usage(_no_terminal(args)) from None
    return first


async def run(command: cli.Command) -> int:
    args = command.args
    password = getattr(args, "password", "")
    console = Console(highlight=False)
    actor = command.actor
    async with command.connect(command.database().url) as conn:
        if args.command == "create-user":
            await create_user(conn, args.username, password, args.role, actor=actor)
            console.print(f"created {args.role} {args.username}")
        elif args.command == "set-password":
            await set_password(conn, args.username, password, actor=actor)
            console.print(f"password of {args.username} changed")
        elif args.command == "unlock":
            if await unlock(conn, args.username, actor=actor):
                console.print(f"{args.username} unlocked: it may sign in again")
            else:
                console.print(f"{args.username} was not locked")
        elif args.command in ("disable", "enable"):
            await set_disabled(conn, args.username, args.command == "disable", actor=actor)
            console.print(f"{args.username} {args.command}d")
        else:
            table = Table("username", "role", "disabled", "last sign-in", "created")
            for username, role, disabled, last_login, created in await list_users(conn):
                table.add_row(
                    username, role, "yes" if disabled else "", str(last_login or ""), str(created)
                )
            console.print(table)
    return cli.OK


def _ask(command: cli.Command) -> int:
    if command.args.command in ("create-user", "set-password"):
        command.args.password = _password(command.args)
    return cli.OK


def main(argv: list[str] | None = None) -> int:
    command = cli.parse(parser(), argv)
    errors = (AccountError, WeakPassword)
    # The password is asked for before the event loop, which would take the prompt's
    # Ctrl-C for itself, and before any database is started.
    asked = cli.run(command, _ask, usage=errors)
    return asked if asked != cli.OK else cli.run(command, run, usage=errors)


if __name__ == "__main__":
    cli.exit_with(main)
