"""The Procrastinate queues and tasks that SQL functions defer jobs on are the ones the
dispatcher works (service/wake.py, service/notify/fanout.py, service/schedule_store.py).
SQL that producers (notify_event()) and pg_cron (flush_digests(), fire_due_schedules())
call directly cannot be handed them, so they are spelled there too: this holds the two
spellings together."""

from __future__ import annotations

import pytest

from service.config.base import ROOT
from service.notify.fanout import MATERIALIZE_QUEUE, MATERIALIZE_TASK
from service.schedule_store import RUN_TASK, SCHEDULE_QUEUE
from service.wake import WAKE_QUEUE, WAKE_TASK


@pytest.mark.parametrize(
    ("path", "queue", "task"),
    [
        ("notify/functions/notify_event.sql", MATERIALIZE_QUEUE, MATERIALIZE_TASK),
        # The fan-out's and the digest flush's wake-ups (both queue through it).
        ("notify/functions/notify_queue.sql", WAKE_QUEUE, WAKE_TASK),
        ("schedules/functions/fire_due_schedules.sql", SCHEDULE_QUEUE, RUN_TASK),
    ],
)
def test_sql_defers_on_the_queues_python_works(path: str, queue: str, task: str) -> None:
    assert f"'{queue}', '{task}'" in (ROOT / "sql" / path).read_text()
