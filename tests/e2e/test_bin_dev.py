"""bin/dev on a fresh data folder with no DATABASE_URL: the README's quick start, its
stand-ins for the config's peers, and ports it shares with peers of your own."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import psycopg
from playwright.sync_api import expect, sync_playwright

from service.config.base import ROOT
from service.config.load import load_config
from tests.admin_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support import free_port

EXAMPLE = ROOT / "config" / "example.toml"

START_BUDGET_S = 90.0
# The README promises the delivery in bin/dev's log and in the SQL shell "within a moment".
DELIVERY_BUDGET_S = 5.0


class Output:
    """bin/dev's terminal, read line by line as it is written."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        # Closed here, at the end of the output, whether or not the test got to text().
        with stream:
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
        assert not self.reader.is_alive(), "bin/dev's output did not end after it exited"
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


def example_on_free_ports(directory: Path) -> tuple[Path, dict[str, int]]:
    """The example config with its peers on free ports (and no dispatcher metrics port),
    so the test runs beside anything that holds the example's own."""
    ports = {"http": free_port(), "smtp": free_port(), "kafka": free_port()}
    text = EXAMPLE.read_text()
    for old, new in (
        ("127.0.0.1:8001/", f"127.0.0.1:{ports['http']}/"),
        ("port = 8025,", f"port = {ports['smtp']},"),
        ('"127.0.0.1:9092"', f'"127.0.0.1:{ports["kafka"]}"'),
        ("metrics_port = 9464", "metrics_port = 0"),
    ):
        assert old in text, f"config/example.toml has no {old!r} any more"
        text = text.replace(old, new)
    path = directory / "example-free-ports.toml"
    path.write_text(text)
    return path, ports


def dev_env(tmp_path: Path, config: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return env | {
        "PORT": str(port),
        "MARK_NOTIFY_DATA_DIR": str(tmp_path / "pg"),
        "MARK_NOTIFY_CONFIG": str(config),
        "WEB_CONCURRENCY": "1",
    }


class Dev:
    """One bin/dev, started and ready; stop() returns its whole terminal."""

    def __init__(self, env: dict[str, str]) -> None:
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self.process = subprocess.Popen(
            [str(ROOT / "bin" / "dev")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.out = Output(self.process)
        try:
            _wait_ready(self.base, self.process)
        except AssertionError as exc:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
            raise AssertionError(f"{exc}:\n{self.out.text()}") from None

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        output = self.out.text()
        assert self.process.returncode == 0, output
        assert "[bin/dev] stopped" in output, output
        return output

    def database_url(self) -> str:
        line = next(line for line in self.out.lines if "] database   " in line)
        return line.split("database   ", 1)[1].split("  (", 1)[0]


def wait_outbox(url: str, consumer: str, status: str, budget_s: float = 30.0) -> tuple[str, int]:
    """The newest outbox row of the consumer once it has the status: (status, attempts)."""
    deadline = time.monotonic() + budget_s
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT status, attempts FROM outbox WHERE consumer = %s ORDER BY id DESC LIMIT 1",
                (consumer,),
            ).fetchone()
            if row is not None and row[0] == status:
                return str(row[0]), int(row[1])
            assert time.monotonic() < deadline, f"{consumer}: {row} (waiting for {status})"
            time.sleep(0.1)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def example_peers() -> set[tuple[str, str]]:
    """(kind, host:port) of the example config's SMTP server and HTTP peers."""
    config = load_config(EXAMPLE, {})
    found = {("SMTP", f"{c.smtp.host}:{c.smtp.port}") for c in config.channels.values() if c.smtp}
    urls = [p.url for c in config.channels.values() for p in c.providers]
    urls += [c.url for c in config.consumers.values() if c.url]
    return found | {("HTTP", urlsplit(url).netloc) for url in urls}


@contextmanager
def hold(address: str) -> Iterator[None]:
    """A listener of our own on host:port, unless something else already holds it:
    either way bin/dev finds the port taken."""
    host, port = address.rsplit(":", 1)
    try:
        sock = socket.create_server((host, int(port)))
    except OSError:
        yield
        return
    with sock:
        yield


@contextmanager
def http_consumer(port: int) -> Iterator[list[str]]:
    """A consumer of our own on the port: the paths POSTed to it."""
    paths: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            paths.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def demo_page_shows_the_inbox(base: str) -> None:
    """bin/dev's /dev/inbox in Chromium: the element shows user-1's notification, and the
    page's button sends another, which arrives while the page is open (the stream)."""
    if not (Path(CHROMIUM).exists() or os.environ.get("CI")):
        return  # no browser on this machine; CI has one (tests/admin_browser.py)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/dev/inbox")
            bell = page.get_by_role("button", name="Notifications, 1 unseen")
            bell.click()
            titles = page.locator("mark-notify-inbox .item .t")
            expect(titles).to_have_text(["New episode of Dark"])
            page.wait_for_function("document.querySelector('mark-notify-inbox').live")
            # A click outside the element closes it.
            page.get_by_role("button", name="Send a test event").click()
            expect(page.locator("#sent")).to_contain_text("sent")
            expect(page.locator("mark-notify-inbox .badge")).to_have_text("2", timeout=30_000)
            page.get_by_role("button", name="Notifications, 2 unseen").click()
            expect(titles).to_have_count(2)
        finally:
            browser.close()


def test_bin_dev_serves_seen_then_stops_cleanly(embedded_tmp_path: Path) -> None:
    tmp_path = embedded_tmp_path
    port = free_port()
    config, peer_ports = example_on_free_ports(tmp_path)
    env = dev_env(tmp_path, config, port)
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

        # The example's Kafka consumer: bin/dev's Tansu stand-in takes the mark, and its
        # topic reader prints it.
        response = httpx.post(
            f"{base}/v1/seen",
            json={"tag": "cashback-offers", "id": "offer-7"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        out.wait_for("kafka mark-notify.seen.client: client saw cashback-offers/offer-7", 30)
        database = next(line for line in out.lines if "] database   " in line)
        url = database.split("database   ", 1)[1].split("  (", 1)[0]
        wait_outbox(url, "cashback", "delivered")

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
        demo_page_shows_the_inbox(base)

        # The email is kept as a file, whose path and links bin/dev prints.
        out.wait_for("[dev peers]   link https://example.com/dark/3", 30)
        line = next(line for line in out.lines if "email #1: " in line)
        kept = Path(line.rsplit(" in ", 1)[1].strip())
        assert kept.parent == tmp_path / "mail" and kept.suffix == ".eml", line
        mail = email.message_from_bytes(kept.read_bytes(), policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        assert mail["Subject"] == "New episode of Dark: Past and Present"
        assert mail["To"] == "user-1@example.com"
        unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
        assert f"[dev peers]   unsubscribe {unsubscribe}\n" in out.lines
        body = mail.get_body(("plain",))
        assert body is not None and unsubscribe in str(body.get_content())
        # It leads to this bin/dev, on whichever PORT it runs: a page to confirm on.
        assert unsubscribe.startswith(f"{base}/v1/unsubscribe/"), unsubscribe
        page = httpx.get(unsubscribe)
        assert page.status_code == 200 and "Stop emails about" in page.text, page.text

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
    # The local peers bin/dev runs received them, and it said where they run.
    assert "email #1: 'New episode of Dark: Past and Present'" in output
    assert "push provider push-primary" in output
    assert f"stand-in   SMTP 127.0.0.1:{peer_ports['smtp']} for channel email" in output
    assert f"stand-in   HTTP 127.0.0.1:{peer_ports['http']} for provider sms-primary" in output
    assert f"stand-in   Kafka 127.0.0.1:{peer_ports['kafka']} for consumer cashback" in output
    assert "127.0.0.1:8001" not in output and "127.0.0.1:8025" not in output, output
    assert f"inbox demo {base}/dev/inbox" in output, output
    with httpx.Client() as client:
        try:
            client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            raise AssertionError("the API still answers after Ctrl-C")
        except httpx.ConnectError:
            pass


def test_bin_dev_beside_peers_of_your_own_and_a_second_bin_dev(embedded_tmp_path: Path) -> None:
    """The example's SMTP and HTTP ports taken (by this test, or by anything else): bin/dev
    starts no stand-in there, says so, and serves; so does a second bin/dev on another
    PORT, sharing the first one's embedded database and its Kafka stand-in."""
    tmp_path = embedded_tmp_path
    taken = example_peers()
    assert taken == {("SMTP", "127.0.0.1:8025"), ("HTTP", "127.0.0.1:8001")}, taken
    with ExitStack() as held:
        for _, address in taken:
            held.enter_context(hold(address))
        first = Dev(dev_env(tmp_path, EXAMPLE, free_port()))
        try:
            second = Dev(dev_env(tmp_path, EXAMPLE, free_port()))
            try:
                for dev in (first, second):
                    token = subprocess.run(
                        [str(ROOT / "bin" / "token"), "client", "user-42"],
                        env=dev_env(tmp_path, EXAMPLE, 0),
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.strip()
                    # The service's own tag: a mark no consumer has to be reached for.
                    response = httpx.post(
                        f"{dev.base}/v1/seen",
                        json={"tag": "notifications", "id": "n-1"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert response.status_code == 200, response.text
            finally:
                second_output = second.stop()
        finally:
            first_output = first.stop()
    for output in (first_output, second_output):
        for kind, address in taken:
            assert f"found      {kind} {address} already listening" in output, output
        assert "Traceback" not in output, output
    # The second finds the first's Kafka stand-in (or whatever held the port before).
    assert "found      Kafka 127.0.0.1:9092 already listening" in second_output, second_output


def test_bin_dev_without_stand_ins(embedded_tmp_path: Path) -> None:
    """MARK_NOTIFY_DEV_PEERS=0: no stand-in anywhere; a consumer of your own is delivered
    to, and the Kafka consumer, with no broker, is off: its marks wait, without an error."""
    tmp_path = embedded_tmp_path
    config, ports = example_on_free_ports(tmp_path)
    env = dev_env(tmp_path, config, free_port()) | {"MARK_NOTIFY_DEV_PEERS": "0"}
    with http_consumer(ports["http"]) as received:
        dev = Dev(env)
        try:
            token = subprocess.run(
                [str(ROOT / "bin" / "token"), "client", "user-42"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            for tag in ("cashback-offers", "promotions"):
                response = httpx.post(
                    f"{dev.base}/v1/seen",
                    json={"tag": tag, "id": "x-1"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 200, response.text
            # The later mark is delivered to our consumer; the earlier one still waits.
            wait_outbox(dev.database_url(), "promotions", "delivered")
            assert received == ["/v1/seen/client"]
            assert wait_outbox(dev.database_url(), "cashback", "pending") == ("pending", 0)
            assert not listening(ports["smtp"]) and not listening(ports["kafka"])
        finally:
            output = dev.stop()
    assert f"found      HTTP 127.0.0.1:{ports['http']} already listening" in output, output
    off = f"nothing runs on SMTP 127.0.0.1:{ports['smtp']}, Kafka 127.0.0.1:{ports['kafka']}"
    assert f"stand-ins  off (MARK_NOTIFY_DEV_PEERS=0): {off}" in output, output
    assert "no broker  for Kafka consumer(s) cashback: MARK_NOTIFY_DEV_PEERS=0;" in output
    assert "[dev peers]" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert not [line for line in errors if "cashback" in line or "kafka" in line.lower()], output
