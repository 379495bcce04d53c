"""Web Push's VAPID keys (bin/vapid): a new key pair for [notify.webpush], or the public
key of the configured one, which pages subscribe with (GET /v1/webpush-key serves it too).

    bin/vapid new      the private key as the environment sets it, and its public key
    bin/vapid public   the public key of the configured notify.webpush.vapid_private_key

The private key is printed once and kept nowhere: put it in the deployment's secrets.
Changing it later orphans every subscription (browsers bound them to the old public key,
and their push services refuse the new one): keep it for the life of the deployment.
"""

from __future__ import annotations

import argparse
import sys

from service import webpush
from service.config.base import ConfigError
from service.ops import cli
from service.ops.database_target import load_cli_config

ENV_NAME = "MARK_NOTIFY__notify__webpush__vapid_private_key"


def parser() -> argparse.ArgumentParser:
    parser = cli.command_parser("bin/vapid", __doc__ or "", database=False)
    parser.add_argument("--config", metavar="FILE", help=cli.CONFIG_HELP)
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("new", help="a new key pair: the private key as an environment line")
    actions.add_parser("public", help="the configured key's public key (applicationServerKey)")
    return parser


def run(command: cli.Command) -> int:
    """Synchronous: keys are made and read here, nothing is stored."""
    if command.args.action == "new":
        private = webpush.new_private_key()
        public = webpush.public_key_text(webpush.private_key(private))
        sys.stdout.write(f"{ENV_NAME}={private}\n# public key (applicationServerKey): {public}\n")
        return cli.OK
    settings = load_cli_config(command.environ).notify.webpush
    if settings is None:
        raise cli.Usage("the config has no [notify.webpush]: make a key with `bin/vapid new`")
    key = webpush.private_key(settings.vapid_private_key)
    sys.stdout.write(webpush.public_key_text(key) + "\n")
    return cli.OK


def main(argv: list[str] | None = None) -> int:
    return cli.main(parser(), run, argv, usage=(ConfigError,))


if __name__ == "__main__":
    cli.exit_with(main)
