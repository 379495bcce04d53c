"""Alembic, configured in code (no alembic.ini): the revisions live in alembic/versions and
execute the SQL files of sql/migrations."""

from __future__ import annotations

import argparse
import importlib.resources
import os
from functools import cache
from typing import LiteralString

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command
from service.config.base import ROOT
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


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


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
        upgrade(url, args.revision or "head")
    else:
        downgrade(url, args.revision or "base")


if __name__ == "__main__":
    main()
