"""Alembic, configured in code (no alembic.ini): the revisions live in alembic/versions and
execute the SQL files of sql/migrations."""

from __future__ import annotations

import argparse
import importlib.resources
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import LiteralString

import msgspec
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command
from service import citus
from service.config.base import ROOT, ConfigError
from service.config.core import DatabaseMode, DatabaseSettings
from service.config.load import DEFAULT_CONFIG, apply_env, load_config
from service.database import sqlalchemy_url
from service.sql import MIGRATIONS_DIR, read_sql_file


def alembic_config(url: str | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    if url:
        # ConfigParser interpolation would read '%' in a password as a reference.
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(url: str, revision: str = "head", *, mode: DatabaseMode = "single") -> None:
    """Upgrade to `revision`; in "citus" mode at head, then distribute the tables
    (service/citus.py), which does nothing to tables already placed."""
    command.upgrade(alembic_config(url), revision)
    if mode == "citus" and revision == "head":
        citus.distribute(url)


def database_mode(environ: Mapping[str, str] | None = None) -> DatabaseMode:
    """`[database] mode` of the config, or of the environment alone where no config file
    is (`MARK_NOTIFY__database__mode`)."""
    env = os.environ if environ is None else environ
    if Path(env.get("MARK_NOTIFY_CONFIG", DEFAULT_CONFIG)).exists():
        return load_config(environ=env).database.mode
    section = apply_env({}, env).get("database", {})
    try:
        return msgspec.convert(section, DatabaseSettings, strict=False).mode
    except msgspec.ValidationError as exc:
        raise ConfigError(f"environment: {exc} - at `$.database`") from None


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def procrastinate_schema() -> LiteralString:
    """Procrastinate's own schema for the installed version, as it ships it."""
    text = importlib.resources.files("procrastinate.sql").joinpath("schema.sql").read_text()
    return text


def execute_sql(text: LiteralString) -> None:
    """Run SQL inside the current migration's transaction (for revisions).

    It goes to psycopg as one simple-protocol query: several statements and no parameter
    parsing, so SQL written for psql runs unchanged.
    """
    from alembic import op

    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    driver.execute(text)


def execute_file(name: str) -> None:
    execute_sql(read_sql_file(MIGRATIONS_DIR / name))


def main() -> None:
    parser = argparse.ArgumentParser(description="Migrate the mark-notify database.")
    parser.add_argument(
        "action", choices=["upgrade", "downgrade", "head"], nargs="?", default="upgrade"
    )
    parser.add_argument("revision", nargs="?")
    args = parser.parse_args()
    if args.action == "head":
        print(head_revision())
        return
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    if args.action == "upgrade":
        upgrade(url, args.revision or "head", mode=database_mode())
    else:
        downgrade(url, args.revision or "base")


if __name__ == "__main__":
    main()
