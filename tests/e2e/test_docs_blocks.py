"""Every ```sh block of README.md and docs/*.md runs as pasted.

Each file's blocks run in order in one bash session (a block may use what an earlier one
set, e.g. KEY=...), in a terminal (a block may ask for a password), against `bin/dev`
started on a fresh database and a free port. A block stops at its first failing command
(`set -e`), and a block this test cannot run is named in NOT_RUN with the reason.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.config.base import ROOT
from tests.support import free_port

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"sh", "bash", "shell"}
FENCE = re.compile(r"^```([^\s`]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

# Blocks holding one of these commands are not run here, and why. Keep it short: a block
# that is neither run nor named here cannot exist (every other block is run).
NOT_RUN = {
    "bin/dev": "runs until Ctrl-C; this test runs it as the service the other blocks use",
    "bin/test": "is this suite itself",
    "docker compose": "needs Docker (tests/unit/test_deploy_files.py reads the compose file)",
    "apt-get": "installs system packages as root on the database's host",
    "pip install": "installs from the package index",
}

START_BUDGET_S = 90.0
SESSION_BUDGET_S = 180.0
# Answered when a command asks for one on the terminal (bin/admin create-user).
PASSWORD = b"docs-example passphrase\n"
PROMPT = re.compile(rb"(?i)(password|again)[^\n]*:\s*$")
MARK = "@@docs-block"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def sh_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [
        Block(path, text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) in SHELLS
    ]


def listed_commands(block: Block) -> list[str]:
    """The NOT_RUN commands a block holds (in its commands, not in what comments say)."""
    code = re.sub(r"(^|\s)#.*", "", block.text)
    return [
        command
        for command in NOT_RUN
        if re.search(rf"(^|[\s;&|(]){re.escape(command)}(\s|$)", code, re.MULTILINE)
    ]


def runnable(path: Path) -> list[Block]:
    return [b for b in sh_blocks(path) if not listed_commands(b)]


def test_every_listed_command_is_in_a_block_this_test_does_not_run() -> None:
    blocks = [b for path in DOCS for b in sh_blocks(path)]
    assert len(blocks) > 10, "the fence pattern no longer finds the docs' sh blocks"
    used = {command for b in blocks for command in listed_commands(b)}
    assert used == set(NOT_RUN), f"no block holds {sorted(set(NOT_RUN) - used)}: drop them"


@dataclass
class Service:
    base: str
    env: dict[str, str]
    addresses: dict[str, str]


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    """bin/dev as a newcomer runs it, on this test's own database and ports."""
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARK_NOTIFY")}
    env |= {
        "DATABASE_URL": db_url,
        "MARK_NOTIFY_CONFIG": str(ROOT / "config" / "example.toml"),
        "MARK_NOTIFY_DATA_DIR": str(tmp_path / "pg"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "MARK_NOTIFY__dispatcher__metrics_port": str(metrics_port),
        # The blocks read answers, not deliveries: no stand-in peers on fixed ports.
        "MARK_NOTIFY_DEV_PEERS": "0",
        # As every test: pg_cron (CI's server has it) would keep jobs for this throwaway
        # database after it is dropped.
        "MARK_NOTIFY__scheduler__backend": "procrastinate",
    }
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "bin-dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [str(ROOT / "bin" / "dev")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(base, dev, log_path)
        yield Service(
            base,
            env,
            {"127.0.0.1:8000": f"127.0.0.1:{port}", "127.0.0.1:9464": f"127.0.0.1:{metrics_port}"},
        )
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()


def _wait_ready(base: str, dev: subprocess.Popen[bytes], log: Path) -> None:
    """Ready and its dispatcher started: the config's schedules are then in the table."""
    deadline = time.monotonic() + START_BUDGET_S
    while time.monotonic() < deadline:
        assert dev.poll() is None, f"bin/dev exited:\n{log.read_text()}"
        try:
            answer = httpx.get(f"{base}/readyz", timeout=2)
            if answer.status_code == 200 and answer.json()["scheduler"]["backend"]:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"bin/dev not ready in {START_BUDGET_S}s:\n{log.read_text()}")


def session_script(blocks: list[Block], addresses: dict[str, str]) -> str:
    lines = [
        "set -eu",
        # A 4xx or 5xx answer is a broken example, not an output to paste past.
        'curl() { command curl --fail-with-body "$@"; }',
    ]
    for number, block in enumerate(blocks):
        text = block.text
        for documented, actual in addresses.items():
            text = text.replace(documented, actual)
        lines += [f"printf '\\n{MARK} {number}@@\\n'", text]
    lines.append(f"printf '\\n{MARK} end@@\\n'")
    return "\n".join(lines) + "\n"


def run_in_terminal(script: str, env: dict[str, str]) -> tuple[int, str]:
    """bash running `script` with a terminal of its own, answering password prompts."""
    master, slave = pty.openpty()
    # Tall and wide: nothing folds and no pager starts.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 1000, 250, 0, 0))
    try:
        shell = subprocess.Popen(
            ["setsid", "--ctty", "--wait", "bash", "-c", script],
            cwd=ROOT,
            env=env | {"TERM": "dumb", "PAGER": "cat", "PSQL_PAGER": "cat"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        output, answered = bytearray(), 0
        deadline = time.monotonic() + SESSION_BUDGET_S
        while True:
            if time.monotonic() > deadline:
                shell.kill()
                shell.wait()
                raise AssertionError(f"still running after {SESSION_BUDGET_S}s:\n{output!r}")
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has ended
                break
            if not chunk:
                break
            output += chunk
            if PROMPT.search(output[answered:]):
                os.write(master, PASSWORD)
                answered = len(output)
        return shell.wait(timeout=60), output.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)


def _block_of(blocks: list[Block], output: str, at: int) -> str:
    """The block whose output holds position `at` of the session's output."""
    marks = re.findall(rf"{MARK} (\d+)@@", output[:at])
    if not marks:
        return "before the first block"
    block = blocks[int(marks[-1])]
    return f"{block.where}\n{block.text}"


@pytest.mark.parametrize(
    "path",
    [p for p in DOCS if runnable(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_sh_blocks_of_a_file_run_as_pasted(path: Path, service: Service) -> None:
    blocks = runnable(path)
    code, output = run_in_terminal(session_script(blocks, service.addresses), service.env)
    failed = _block_of(blocks, output, len(output))
    assert code == 0 and f"{MARK} end@@" in output, f"exit {code} in {failed}\n---\n{output}"
    # A pipeline's failing left side or a typo'd command does not stop `set -e`; a reader
    # of the terminal still sees it.
    for sign in ("Traceback (most recent call last)", "command not found", "Exception ignored"):
        at = output.find(sign)
        assert at < 0, f"{sign!r} in {_block_of(blocks, output, at)}\n---\n{output}"
