"""The [admin] section: the web admin panel's sessions and login throttling."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import msgspec


class AdminSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Off: /admin is not mounted at all.
    enabled: bool = True
    # A session ends this long after login, whatever its use, or after `idle` without use.
    session_ttl: timedelta = timedelta(hours=12)
    idle: timedelta = timedelta(hours=1)
    # Cookies are Secure (and __Host- prefixed). Browsers accept Secure cookies from
    # http://127.0.0.1 and http://localhost, so development needs no exception.
    secure_cookies: bool = True
    # Failed logins of one username in a row before it is locked for `lockout`; before
    # that each failure waits failure_delay x 2^(failures-1) (at most max_delay) to answer.
    max_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    lockout: timedelta = timedelta(minutes=15)
    failure_delay: timedelta = timedelta(milliseconds=250)
    max_delay: timedelta = timedelta(seconds=4)
    # Largest CSV of user ids a mailing may upload.
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 5 * 1024 * 1024

    def __post_init__(self) -> None:
        for key in ("session_ttl", "idle", "lockout"):
            if getattr(self, key) <= timedelta(0):
                raise ValueError(f"admin.{key}: must be positive")
