"""bin/dev on a fresh data folder with no DATABASE_URL: the README's quick start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import httpx

from service.config import ROOT
from tests.support import free_port

START_BUDGET_S = 90.0
# The README promises the delivery in bin/dev's log and in the SQL shell "within a moment".
DELIVERY_BUDGET_S = 5.0


class Output:
    """bin/dev's terminal, read line by line as it is written."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self.stream = stream = process.stdout
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace"))

    def wait_for(self, text: str, budget_s: float) -> float:
        """Seconds until a line containing `text` appeared."""
        started = time.monotonic()
        while not any(text in line for line in self.lines):
            assert time.monotonic() - started < budget_s, f"no {text!r} in {budget_s}s"
            time.sleep(0.05)
        return time.monotonic() - started

    def text(self) -> str:
        self.reader.join(timeout=30)
        self.stream.close()
        return "".join(self.lines)


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_BUDGET_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "bin/dev exited before it was ready"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"bin/dev not ready within {START_BUDGET_S}s")


def test_bin_dev_serves_seen_then_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"PORT": str(port), "MARK_NOTIFY_DATA_DIR": str(tmp_path / "pg"), "WEB_CONCURRENCY": "1"}
    started = time.monotonic()
    dev = subprocess.Popen(
        [str(ROOT / "bin" / "dev")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = Output(dev)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, dev)
        token = subprocess.run(
            [str(ROOT / "bin" / "token"), "client", "user-42"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        response = httpx.post(
            f"{base}/v1/seen",
            json={"tag": "promotions", "id": "some-promotion-id"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] in {"recorded", "duplicate"}
        assert time.monotonic() - started < START_BUDGET_S
        # As the README says: the example consumer bin/dev runs logs the signed delivery,
        # and the SQL shell shows the delivered row, within a moment.
        out.wait_for(
            "consumer promotions: client saw promotions/some-promotion-id, signature verified",
            DELIVERY_BUDGET_S,
        )
        readme = (ROOT / "README.md").read_text()
        sql_line = next(line for line in readme.splitlines() if line.startswith("bin/sql -c"))
        shell = subprocess.run(
            ["bash", "-c", sql_line],
            cwd=ROOT,
            env=env | {"MARK_NOTIFY_SQL_BUILTIN": "1"},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "promotions" in shell.stdout and "delivered" in shell.stdout, shell.stdout

        # The README's notification example, run as written there (on this test's port).
        readme = (ROOT / "README.md").read_text()
        start = readme.index("KEY=$(bin/apikey create demo")
        script = readme[start : readme.index("```", start)].replace("127.0.0.1:8000", base[7:])
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script + 'echo; echo "$KEY"\n'],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # curl prints the three answers back to back (user, event, inbox), then the key.
        bodies, key = ran.stdout.strip().rsplit("\n", 1)
        answers, at = [], 0
        while at < len(bodies):
            answer, at = json.JSONDecoder().raw_decode(bodies, at)
            answers.append(answer)
        user, accepted, _inbox = answers
        assert user["id"] == "user-1", ran.stdout
        assert accepted["status"] == "done" and accepted["created"] is True, ran.stdout
        event_id = accepted["id"]
        service = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 30
        while True:
            status = httpx.get(f"{base}/v1/events/{event_id}", headers=service).json()
            channels = status["channels"]
            if all(channels[c]["sent"] == 1 for c in ("email", "push", "inbox")):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        user_token = subprocess.run(
            [str(ROOT / "bin" / "token"), "client", "user-1"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        inbox = httpx.get(f"{base}/v1/inbox", headers={"Authorization": f"Bearer {user_token}"})
        assert inbox.status_code == 200, inbox.text
        assert [i["title"] for i in inbox.json()["items"]] == ["New episode of Dark"]

        second = subprocess.run(
            [str(ROOT / "bin" / "dev")], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode != 0
        assert "already running" in second.stdout + second.stderr
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)
    output = out.text()
    assert dev.returncode == 0, output
    assert "stopped" in output
    # It says which database it uses, so bin/sql or any client can be pointed at it.
    assert "database   postgresql://" in output and str(tmp_path / "pg") in output, output
    # The local peers bin/dev runs received them.
    assert "email #1: 'New episode of Dark: Past and Present'" in output
    assert "push provider push-primary" in output
    with httpx.Client() as client:
        try:
            client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            raise AssertionError("the API still answers after Ctrl-C")
        except httpx.ConnectError:
            pass
