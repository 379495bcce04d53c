"""Every bin/ command stops quietly when the program reading its output goes away.

`bin/schedules list | head -1`, or the README's old `bin/schedules list | status | sync`,
closes the pipe early; a traceback there reads like a crash of the command itself.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from service.config.base import ROOT

COMMANDS = [
    ["bin/schedules", "list"],
    ["bin/schedules", "status"],
    ["bin/apikey", "list"],
    ["bin/admin", "list"],
    ["bin/redeliver", "--consumer", "promotions", "--dry-run"],
    ["bin/sql", "-c", "SELECT * FROM generate_series(1, 1000)"],
    ["bin/token", "client", "user-1"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_closed_pipe_ends_the_command_without_a_traceback(
    command: list[str], db_url: str
) -> None:
    read_end, write_end = os.pipe()
    # The reader is gone before the first line is written, as `| status` leaves it.
    os.close(read_end)
    env = os.environ | {
        "DATABASE_URL": db_url,
        "MARK_NOTIFY_CONFIG": str(ROOT / "config" / "example.toml"),
        "MARK_NOTIFY_SQL_BUILTIN": "1",
    }
    try:
        ran = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert ran.stderr == "", ran.stderr
    assert ran.returncode != 0  # as `ls` stopped by a closed pipe: the output is incomplete
