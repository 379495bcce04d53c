"""Wire types every capability shares: the error body, health, and the subjects that
identity (service/identity.py) makes of a verified caller.

Each capability keeps its own bodies beside it (service/seen/seen_wire.py,
service/notify/notify_wire.py).
"""

from __future__ import annotations

from typing import Literal

import msgspec


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    # Only for an unknown name (service/errors.py, NAME_CODES): the configured names.
    allowed: list[str] | None = None


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class SchedulerHealth(msgspec.Struct, frozen=True, kw_only=True):
    """The backend running scheduled work (docs/scheduler.md); backend None until a
    dispatcher's start-up (or `bin/schedules sync`) has chosen one."""

    backend: Literal["pg_cron", "procrastinate"] | None
    detail: str | None = None


class Readiness(Health, frozen=True, kw_only=True):
    """GET /readyz: Health, and which scheduler backend is active when the database answers."""

    scheduler: SchedulerHealth | None = None


class Index(msgspec.Struct, frozen=True, kw_only=True):
    """GET /: what this is and where to go, as paths on this server (`admin` is null when
    the panel is off). A browser asking for text/html gets the same as a page of links."""

    service: str = "mark-notify"
    docs: str = "README.md and docs/ of the source"
    openapi: str = "/openapi.json"
    admin: str | None = "/admin/"
    healthz: str = "/healthz"
    readyz: str = "/readyz"
    metrics: str = "/metrics"


# Who a caller is, taken from verified identity (never from the body): the subject a seen
# mark records, and the user the signed-in notification endpoints act for.


class ClientSubject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str
    uid: str | None = None
    bound_uids: list[str] = msgspec.field(default_factory=list)
    phone_id: str | None = None


class DriverSubject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    db_id: str
    uuid: str


class AnonymousSubject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


Subject = ClientSubject | DriverSubject | AnonymousSubject
