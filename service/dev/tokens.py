"""Mint development tokens (bin/token). Refuses unless environment = development."""

from __future__ import annotations

import argparse
import sys
import time

import jwt

from service.config.load import Config, load_config
from service.ops import cli


def mint(claims: dict[str, object], *, ttl_s: int = 3600, config: Config | None = None) -> str:
    """A JWT of the config's dev secret (default: MARK_NOTIFY_CONFIG's) with these claims."""
    config = config or load_config()
    settings = config.identity.jwt
    if config.environment != "development":
        raise SystemExit("bin/token works only with environment = development")
    if settings is None or not settings.secret or "HS256" not in settings.algorithms:
        raise SystemExit("bin/token needs identity.jwt with an HS256 secret")
    now = int(time.time())
    body = {"aud": settings.audience, "iss": settings.issuer, "iat": now, "exp": now + ttl_s}
    return jwt.encode(body | claims, settings.secret, algorithm="HS256")


def parser() -> argparse.ArgumentParser:
    # No database; the config is MARK_NOTIFY_CONFIG (bin/token defaults it to the example).
    parser = cli.command_parser("bin/token", __doc__ or "", database=False)
    kinds = parser.add_subparsers(dest="kind", required=True)
    client = kinds.add_parser("client", help="a client token")
    client.add_argument("user_id")
    client.add_argument("--uid")
    client.add_argument("--phone-id")
    client.add_argument("--bound-uids", default="", help="comma list")
    driver = kinds.add_parser("driver", help="a driver token")
    driver.add_argument("db_id", help="park id")
    driver.add_argument("uuid", help="driver profile id")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    return parser


def run(command: cli.Command) -> int:
    """Synchronous: nothing here waits on the network."""
    args = command.args
    claims: dict[str, object]
    if args.kind == "client":
        claims = {"kind": "client", "sub": args.user_id}
        if args.uid:
            claims["uid"] = args.uid
        if args.phone_id:
            claims["phone_id"] = args.phone_id
        claims["bound_uids"] = [u for u in args.bound_uids.split(",") if u]
    else:
        claims = {"kind": "driver", "db_id": args.db_id, "uuid": args.uuid}
    sys.stdout.write(mint(claims, ttl_s=args.ttl) + "\n")
    return cli.OK


def main(argv: list[str] | None = None) -> int:
    return cli.main(parser(), run, argv)


if __name__ == "__main__":
    cli.exit_with(main)
