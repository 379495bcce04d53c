"""bin/apikey: create, list and revoke producer API keys (service/apikeys.py).

    bin/apikey create billing --scope events:write --scope users:write
    KEY=$(bin/apikey create demo --scope events:write --quiet)
    bin/apikey create support --scope events:read    # reads any producer's event status
    bin/apikey list
    bin/apikey revoke 1a2b3c4d

A key is shown once, when it is made. Creating and revoking a key each write an audit_log
row (actor cli:<os user>). The config and the database are bin/dev's (--config,
--database-url); the embedded database is migrated, as bin/dev would, so a fresh checkout
can mint a key first.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from service.apikeys import SCOPES, create_key, list_keys, revoke_key
from service.identity import API_KEY_PREFIX
from service.ops import cli


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def parser() -> argparse.ArgumentParser:
    parser = cli.command_parser(
        "bin/apikey", "Create, list and revoke producer API keys.", cli.epilog(__doc__, 1)
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="mint a key (shown once)")
    create.add_argument("producer", help="the producer service's name, e.g. billing")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True)
    create.add_argument("--quiet", action="store_true", help="print only the key")
    commands.add_parser("list", help="every key, by prefix")
    revoke = commands.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("prefix", help="the 8 characters after 'mn_'")
    return parser


async def run(command: cli.Command) -> int:
    args = command.args
    async with command.connect(command.database().url) as conn:
        if args.command == "create":
            try:
                created = await create_key(conn, args.producer, args.scope, actor=command.actor)
            except ValueError as exc:
                parser().error(str(exc))
            print(created.key)
            if not args.quiet:
                print(
                    f"API key {created.prefix} for producer {created.producer!r}, scopes "
                    f"{', '.join(created.scopes)}. It is shown only this once: keep it in the "
                    f"producer's secret store. Revoke with: bin/apikey revoke {created.prefix}",
                    file=sys.stderr,
                )
        elif args.command == "list":
            rows = [("PREFIX", "PRODUCER", "SCOPES", "CREATED", "LAST USED", "REVOKED")]
            rows += [
                (
                    k.prefix,
                    k.producer,
                    ",".join(k.scopes),
                    _when(k.created_at),
                    _when(k.last_used_at),
                    _when(k.revoked_at),
                )
                for k in await list_keys(conn)
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        else:
            prefix = args.prefix.removeprefix(API_KEY_PREFIX).split("_")[0]
            revoked = await revoke_key(conn, prefix, actor=command.actor)
            if revoked is None:
                raise cli.Failed(f"no key with prefix {prefix!r}")
            print(f"revoked {prefix} (at {_when(revoked)})")
    return cli.OK


def main(argv: list[str] | None = None) -> int:
    return cli.main(parser(), run, argv)


if __name__ == "__main__":
    cli.exit_with(main)
