"""The config and the database of the ops commands and bin/dev.

The ops commands (bin/redeliver, bin/sql, bin/schedules, bin/apikey, bin/admin) find the
config and the database the way bin/dev does (`resolve_database`), so that after `bin/dev`
a plain `bin/redeliver --consumer cashback` works on the same rows:

- the config: `MARK_NOTIFY_CONFIG` (a command's `--config` sets it, service/ops/cli.py),
  else `config/mark-notify.toml` if there is one, else `config/example.toml` (what bin/dev
  runs);
- the database: `--database-url`, else `DATABASE_URL`, else the config's `database.url`,
  else the embedded PostgreSQL in `.data/pg-dev` (`MARK_NOTIFY_DATA_DIR`), started if it
  is not running and migrated to head, as bin/dev would.

The embedded server is shared safely: pgserver records every process that uses a data
folder (`.handle_pids.json` in it) and only the last one to exit stops the server. A
command run while bin/dev serves therefore leaves it running; one that started the server
itself stops it on exit, unless bin/dev started meanwhile. A process that replaces itself
(exec) never exits in that sense, so bin/sql runs psql as a child when the database is
the embedded one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from service import migrate
from service.config.base import ROOT, ConfigError
from service.config.load import Config, load_config
from service.database import DEV_DATA_DIR, start_embedded

LOCAL_CONFIG = ROOT / "config" / "mark-notify.toml"
EXAMPLE_CONFIG = ROOT / "config" / "example.toml"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file the ops commands and bin/dev read."""
    env = os.environ if environ is None else environ
    if chosen := env.get("MARK_NOTIFY_CONFIG"):
        return Path(chosen)
    return LOCAL_CONFIG if LOCAL_CONFIG.is_file() else EXAMPLE_CONFIG


def load_cli_config(environ: Mapping[str, str] | None = None) -> Config:
    """The config (environment overrides applied); ConfigError names the file and key."""
    env = os.environ if environ is None else environ
    return load_config(config_path(env), env)


def dev_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The embedded server's data folder: bin/dev's (`MARK_NOTIFY_DATA_DIR` moves it)."""
    env = os.environ if environ is None else environ
    return Path(env.get("MARK_NOTIFY_DATA_DIR") or DEV_DATA_DIR)


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    url: str
    # Where the URL came from, for messages: "--database-url", "DATABASE_URL",
    # "database.url in <file>" or "embedded PostgreSQL in <folder>".
    source: str
    embedded: bool = False


class DatabaseNotFound(Exception):
    """No database could be chosen (e.g. the config is broken); the message says why."""


def _start_and_migrate(data_dir: Path) -> str:
    url = start_embedded(data_dir, stop_at_exit=True)
    migrate.upgrade(url)
    return url


def resolve_database(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config: Config | None = None,
    embedded: Callable[[Path], str] = _start_and_migrate,
) -> DatabaseTarget:
    """The database an ops command works on (see the module docstring). `config` is the
    already loaded one, if the command has it; else it is loaded here, only when needed.
    `embedded` starts (or reuses) and migrates the embedded server: tests replace it."""
    env = os.environ if environ is None else environ
    if explicit:
        return DatabaseTarget(explicit, "--database-url")
    if url := env.get("DATABASE_URL"):
        return DatabaseTarget(url, "DATABASE_URL")
    path = config_path(env)
    if config is None:
        try:
            config = load_config(path, env)
        except ConfigError as exc:
            raise DatabaseNotFound(
                f"no DATABASE_URL, and the config it would come from is not usable: {exc}"
            ) from None
    if config.database.url:
        return DatabaseTarget(config.database.url, f"database.url in {_short(path)}")
    data_dir = dev_data_dir(env)
    return DatabaseTarget(
        embedded(data_dir), f"embedded PostgreSQL in {_short(data_dir)}", embedded=True
    )


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]+@")
_DSN_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def display_url(url: str) -> str:
    """The URL (or key=value DSN) with any password replaced by ***, fit for a terminal."""
    return _DSN_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))
