"""Which config and database the ops commands use: bin/dev's, found the same way, so that
after `bin/dev` a plain `bin/redeliver --consumer cashback` reaches the same rows."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from service import database
from service.config.base import ROOT
from service.database import start_embedded
from service.ops import database_target as ops_database
from service.ops.database_target import DatabaseNotFound, config_path, display_url, resolve_database

EXAMPLE = ROOT / "config" / "example.toml"


def config_file(tmp_path: Path, url: str | None) -> Path:
    """A copy of the example config, with this database.url (None: none)."""
    text = EXAMPLE.read_text()
    if url is not None:
        text = text.replace("[database]\n", f'[database]\nurl = "{url}"\n', 1)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def started(data_dir: Path) -> str:
    return f"embedded:{data_dir}"


def resolve(
    environ: dict[str, str], explicit: str | None = None
) -> tuple[str, str, bool, list[Path]]:
    calls: list[Path] = []

    def embedded(data_dir: Path) -> str:
        calls.append(data_dir)
        return started(data_dir)

    target = resolve_database(explicit, environ=environ, embedded=embedded)
    return target.url, target.source, target.embedded, calls


@pytest.mark.citus
def test_the_config_is_the_named_one_else_a_local_one_else_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "named.toml"
    assert config_path({"MARK_NOTIFY_CONFIG": str(named)}) == named
    monkeypatch.setattr(ops_database, "LOCAL_CONFIG", tmp_path / "mark-notify.toml")
    assert config_path({}) == EXAMPLE
    (tmp_path / "mark-notify.toml").write_text("")
    assert config_path({}) == tmp_path / "mark-notify.toml"


@pytest.mark.citus
def test_the_database_is_the_flag_then_the_environment_then_the_config_then_bin_devs(
    tmp_path: Path,
) -> None:
    with_url = str(config_file(tmp_path, "postgresql://cfg-host/cfg"))
    env = {"MARK_NOTIFY_CONFIG": with_url, "DATABASE_URL": "postgresql://env-host/env"}

    assert resolve(env, "postgresql://flag-host/flag")[:2] == (
        "postgresql://flag-host/flag",
        "--database-url",
    )
    assert resolve(env)[:2] == ("postgresql://env-host/env", "DATABASE_URL")
    del env["DATABASE_URL"]
    url, source, embedded, calls = resolve(env)
    assert (url, embedded, calls) == ("postgresql://cfg-host/cfg", False, [])
    assert source.startswith("database.url in ")
    # An override of the key counts as the config's.
    url, *_ = resolve(env | {"MARK_NOTIFY__database__url": "postgresql://override/x"})
    assert url == "postgresql://override/x"

    # Nothing names a database: bin/dev's embedded one, in its data folder.
    plain = {"MARK_NOTIFY_CONFIG": str(config_file(tmp_path, None))}
    url, source, embedded, calls = resolve(plain)
    assert (url, embedded, calls) == (started(database.DEV_DATA_DIR), True, [database.DEV_DATA_DIR])
    assert source == "embedded PostgreSQL in .data/pg-dev"
    moved = tmp_path / "pg"
    url, _, _, calls = resolve(plain | {"MARK_NOTIFY_DATA_DIR": str(moved)})
    assert (url, calls) == (started(moved), [moved])
    # No MARK_NOTIFY_CONFIG and no local config: the example, which names no database.
    url, _, embedded, _ = resolve({})
    assert embedded or Path(ops_database.LOCAL_CONFIG).is_file()


@pytest.mark.citus
def test_a_broken_config_is_named_unless_the_environment_settles_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[database]\nurl = 42\n")
    with pytest.raises(DatabaseNotFound, match=r"broken\.toml"):
        resolve({"MARK_NOTIFY_CONFIG": str(broken)})
    with pytest.raises(DatabaseNotFound, match="no such config file"):
        resolve({"MARK_NOTIFY_CONFIG": str(tmp_path / "missing.toml")})
    url, *_ = resolve({"MARK_NOTIFY_CONFIG": str(broken), "DATABASE_URL": "postgresql://e/e"})
    assert url == "postgresql://e/e"


@pytest.mark.citus
def test_urls_are_shown_without_their_password() -> None:
    assert display_url("postgresql://mn:s3cret@db:5432/mn") == "postgresql://mn:***@db:5432/mn"
    assert display_url("host=db password=s3cret dbname=mn") == "host=db password=*** dbname=mn"
    embedded = "postgresql://postgres:@/postgres?host=/work/.data/pg-dev"
    assert display_url(embedded) == embedded


@pytest.mark.citus
def test_bin_redeliver_after_bin_dev_reaches_its_embedded_database_and_leaves_it_running(
    embedded_tmp_path: Path,
) -> None:
    """No MARK_NOTIFY_CONFIG, no DATABASE_URL: the example config and the embedded server
    bin/dev started (here this test stands in for bin/dev, in a private data folder)."""
    import pgserver

    data_dir = embedded_tmp_path / "pg"
    url = start_embedded(data_dir, stop_at_exit=True)
    try:
        from service import migrate

        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO outbox (kind, consumer, ordering_key, payload, status, bucket)"
                " VALUES ('seen', 'cashback', 'k', '{\"tag\": \"cashback-offers\"}', 'dead',"
                " subject_bucket('k'))"
            )
        env = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MARK_NOTIFY_CONFIG")
        }
        env["MARK_NOTIFY_DATA_DIR"] = str(data_dir)
        ran = subprocess.run(
            [str(ROOT / "bin" / "redeliver"), "--dry-run", "--consumer", "cashback"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert "would requeue 1 rows" in ran.stdout, ran.stdout
        assert "cashback" in ran.stdout and "dead" in ran.stdout
        # bin/dev's server outlived the command.
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT status FROM outbox").fetchall() == [("dead",)]
    finally:
        pgserver.get_server(data_dir).cleanup()  # type: ignore[attr-defined]


@pytest.mark.citus
def test_the_help_examples_name_what_the_example_config_defines() -> None:
    """A newcomer copies an example from --help: its names must exist in bin/dev's config."""
    from service.config.load import load_config
    from service.ops import redeliver_cli as redeliver

    config = load_config(ROOT / "config" / "example.toml", {})
    destinations = set(config.consumers) | set(config.channels)
    doc = redeliver.__doc__ or ""
    examples = [line.split() for line in doc.splitlines() if "bin/redeliver --" in line]
    assert examples
    for words in examples:
        for flag, value in itertools.pairwise(words):
            if flag == "--consumer":
                assert value in destinations, value
            if flag == "--tag":
                assert value in config.tags, value
            if flag == "--event-type":
                assert value in config.event_types, value
