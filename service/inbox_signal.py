"""The live inbox's wake-up: the PostgreSQL NOTIFY channel on which the writers of
inbox_changes (the dispatcher's inbox deliveries, the seen write path) name a user, and
each API process's one listener (service/notify/inbox_hub.py) wakes that user's streams.

A core name because three packages meet on it: the dispatcher and the seen capability
send, the notify capability listens.
"""

from __future__ import annotations

LISTEN_CHANNEL = "mark_notify_inbox"
