"""Configuration of scheduled work: the backend that runs it, retention, and periodic
schedules declared in the file. Part of Config (service/config.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import msgspec

from service.config_base import Name


# -- scheduler: service/schedule/backend.py
class SchedulerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which backend runs scheduled work: pg_cron where installed, else the dispatchers'
    Procrastinate periodic tasks ("auto" chooses)."""

    backend: Literal["auto", "pg_cron", "procrastinate"] = "auto"


# -- retention: service/schedule/retention.py
class RetentionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How long finished rows are kept before they are pruned."""

    delivered: timedelta = timedelta(days=7)


# -- periodic schedules: service/schedule/periodic.py
class ScheduleSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A periodic event declared in the config (seeded into the schedules table)."""

    cron: str
    event_type: Name
