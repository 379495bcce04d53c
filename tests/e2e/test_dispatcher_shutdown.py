"""A dispatcher whose database has stopped still stops on SIGTERM, within a bound."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import migrate
from tests.chaos_support import PrivatePostgres, dispatcher_process, service_env, wait_log
from tests.consumers import http_consumer, to_toml
from tests.support import config_data

# The graceful stop's bound (dispatcher/worker.py: STOP_LOOPS_S for loops, which do not
# wait for a database that is gone, and STOP_SIDE_S each for side tasks and pools) is far
# below dispatcher/main.py's hard STOP_DEADLINE_S (22 s); a dispatcher that needed the hard
# deadline exits 1.
EXIT_WITHIN_S = 10.0


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        migrate.upgrade(pg.url)
        yield pg


@pytest.mark.parametrize("down_for_s", [0.5, 8.0])
def test_sigterm_stops_a_dispatcher_whose_database_is_gone(
    private_pg: PrivatePostgres, tmp_path: Path, down_for_s: float
) -> None:
    consumers = {"promotions": http_consumer("http://127.0.0.1:9/seen")}
    data = config_data(
        private_pg.url, consumers=consumers, dispatcher={"sweep_interval": 1, "metrics_port": 0}
    )
    data["tags"] = {k: data["tags"][k] for k in ("promotions", "notifications")}
    config_file = tmp_path / "dispatcher.toml"
    config_file.write_text(to_toml(data))
    dispatcher = dispatcher_process(
        service_env(config_file, private_pg.url), "stopper", tmp_path / "dispatcher.log"
    )
    dispatcher.start()
    try:
        assert wait_log(dispatcher, "consumer promotions via http", 30), dispatcher.log_tail()
        private_pg.stop("immediate")
        # Short: the stop comes while its connections die; long: its loops and
        # Procrastinate's workers are deep in reconnect attempts.
        time.sleep(down_for_s)
        started = time.monotonic()
        dispatcher.signal(signal.SIGTERM)
        code = dispatcher.wait(EXIT_WITHIN_S)
        took = time.monotonic() - started
    finally:
        dispatcher.kill()
    assert code is not None, f"running {EXIT_WITHIN_S} s after SIGTERM:\n{dispatcher.log_tail()}"
    assert code == 0, dispatcher.log_tail()
    assert took < EXIT_WITHIN_S
