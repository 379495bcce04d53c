"""The dispatcher wake-up: the Procrastinate queue and task that wake_dispatchers() (SQL)
defers one job on per consumer with new outbox rows.

Shared by the paths that fill the outbox from Python (the seen write path, bin/redeliver)
and by the dispatcher that runs the task. The notification fan-out's SQL
(notify_materialize_chunk) spells the same two names as literals, so renaming one means
changing it there too.
"""

from __future__ import annotations

WAKE_QUEUE = "dispatch"
WAKE_TASK = "dispatcher.wake"
