"""The dispatcher wake-up: the Procrastinate queue and task that wake_dispatchers() (SQL)
defers one job on per consumer with new outbox rows.

Shared by the paths that fill the outbox from Python (the seen write path, bin/redeliver)
and by the dispatcher that runs the task. The fan-out's and the digests' SQL
(notify_materialize_chunk(), flush_digests()) spell the same two names, as producers and
pg_cron call them without Python; tests/unit/test_job_names.py holds the two together.
"""

from __future__ import annotations

WAKE_QUEUE = "dispatch"
WAKE_TASK = "dispatcher.wake"
