"""Wire types every capability shares: the error body, health, an event's acceptance and
status, and the subjects that identity (service/identity.py) makes of a verified caller.

Each capability keeps its own bodies beside it (service/seen/seen_wire.py,
service/notify/notify_wire.py); an event's acceptance and status are here because the
admin's mailings show them too.
"""

from __future__ import annotations

from datetime import datetime
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


# An event's intake and status: POST /v1/events and GET /v1/events/{id} answer them, and
# the admin's mailings show them (service/event_intake.py reads both).

EventStatusName = Literal["scheduled", "materializing", "done", "cancelled"]


class EventAccepted(msgspec.Struct, frozen=True):
    """`created` is false for a repeat of the idempotency key: the first event's id and
    status, and nothing new was written."""

    id: str
    status: EventStatusName
    created: bool


class RecipientCounts(msgspec.Struct, frozen=True):
    # Users the event was materialized for, and listed ids that are no known user.
    notified: int
    no_recipient: int


class SuppressedCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Why deliveries were not made: the user's switches (`muted`, `preference`), no
    contact for the channel (`no_contact`), seen before an escalation was due (`seen`),
    past the type's ttl (`expired`), or the user was erased (`erased`)."""

    muted: int = 0
    preference: int = 0
    no_contact: int = 0
    seen: int = 0
    expired: int = 0
    erased: int = 0


class ChannelCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Deliveries of one channel by state. `queued` waits to be sent, `held` waits for
    the user's quiet hours to end (the two are disjoint); `failed` was refused for good,
    `dead` ran out of attempts; `seen` counts sent notifications the user has seen."""

    queued: int = 0
    held: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    seen: int = 0
    suppressed: SuppressedCounts = SuppressedCounts()


class EventStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    status: EventStatusName
    send_at: datetime
    created_at: datetime
    materialized_at: datetime | None
    recipients: RecipientCounts
    channels: dict[str, ChannelCounts]


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
