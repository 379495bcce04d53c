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
`cli:<os user>`. The database is bin/dev's unless DATABASE_URL says otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import shlex
import sys
from typing import Any

import psycopg
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
from service.database import CONNECTION_OPTIONS
from service.ops.audit import cli_actor
from service.ops.database_target import ops_database_url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/admin",
        description="Manage the admin panel's accounts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--database-url", help="default: DATABASE_URL, else bin/dev's")
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
    return parser.parse_args(argv)


def _asks(args: argparse.Namespace) -> bool:
    """Whether the command will prompt for a password."""
    return args.command in ("create-user", "set-password") and not args.password_stdin


def _no_terminal(args: argparse.Namespace) -> str:
    role = f" --role {args.role}" if args.command == "create-user" else ""
    example = f"bin/admin {args.command} {shlex.quote(args.username)}{role}"
    return (
        "admin: no terminal to ask for the password on: give it on stdin with "
        f"--password-stdin, e.g. {example} --password-stdin < password.txt"
    )


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    check_strength(first)
    if getpass.getpass("Again: ") != first:
        raise SystemExit("admin: the passwords differ")
    return first


def run(args: argparse.Namespace, conn: psycopg.Connection[Any], console: Console) -> int:
    actor = cli_actor()
    if args.command == "create-user":
        create_user(conn, args.username, _password(args.password_stdin), args.role, actor=actor)
        console.print(f"created {args.role} {args.username}")
    elif args.command == "set-password":
        set_password(conn, args.username, _password(args.password_stdin), actor=actor)
        console.print(f"password of {args.username} changed")
    elif args.command == "unlock":
        if unlock(conn, args.username, actor=actor):
            console.print(f"{args.username} unlocked: it may sign in again")
        else:
            console.print(f"{args.username} was not locked")
    elif args.command in ("disable", "enable"):
        set_disabled(conn, args.username, args.command == "disable", actor=actor)
        console.print(f"{args.username} {args.command}d")
    else:
        table = Table("username", "role", "disabled", "last sign-in", "created")
        for username, role, disabled, last_login, created in list_users(conn):
            table.add_row(
                username, role, "yes" if disabled else "", str(last_login or ""), str(created)
            )
        console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if _asks(args) and not sys.stdin.isatty():
        # getpass would fall back to stdin and die on its end (EOFError): say what to do.
        print(_no_terminal(args), file=sys.stderr)
        return 2
    url = ops_database_url("admin", args.database_url)
    try:
        with psycopg.connect(url, autocommit=True, options=CONNECTION_OPTIONS) as conn:
            return run(args, conn, Console(highlight=False))
    except (AccountError, WeakPassword) as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 2
    except EOFError:
        # The terminal's input ended (Ctrl-D) at the prompt.
        print(_no_terminal(args), file=sys.stderr)
        return 2


if __name__ == "__main__":
    from service.ops import cli_exit

    cli_exit.run(main)
