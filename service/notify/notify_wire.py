"""Wire types of the notification API: every body its endpoints take or give.

Requests forbid unknown fields, so a misspelt field is an error rather than silently
ignored. The OpenAPI document (service/notify/notify_openapi.py) is generated from these Structs.
Limits that come from the configuration (`notify.max_recipients`, `notify.max_data_bytes`)
are checked after decoding, so that going over one gets its own error code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from service.text_rules import SAFE_PATTERN, SAFE_SEGMENT_PATTERN

# Identifiers are printable text only, one rule for all (service/text_rules.py).
_PRINTABLE = SAFE_PATTERN
_NOT_IN_ADDRESS = r"@\s\x00-\x1f\x7f"

# How many inline users or devices one body may carry; bulk imports are a separate limit.
MAX_DEVICES = 20
MAX_IMPORT = 1000

# No "/" either: a user id is a path segment of /v1/users/{id}.
UserId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=SAFE_SEGMENT_PATTERN,
        description="Your user id: printable, no `/`.",
    ),
]
Topic = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        pattern=_PRINTABLE,
        description="An audience, e.g. `series:123`.",
    ),
]
Email = Annotated[
    str,
    msgspec.Meta(
        max_length=254,
        pattern=rf"^[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}]+\.[^{_NOT_IN_ADDRESS}]+$(?!\n)",
    ),
]
Phone = Annotated[
    str,
    msgspec.Meta(pattern=r"^\+[1-9][0-9]{1,14}$(?!\n)", description="E.164: `+4915112345678`."),
]
LocaleTag = Annotated[
    str,
    msgspec.Meta(
        max_length=35,
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$(?!\n)",
        description="BCP 47, e.g. `en` or `pt-BR`.",
    ),
]
TimeZone = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-/]+$(?!\n)",
        description="IANA time zone, e.g. `Europe/Berlin`; none means UTC.",
    ),
]
DeviceToken = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=_PRINTABLE)]
IdempotencyKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        pattern=_PRINTABLE,
        description="Unique per producer, forever: a repeat returns the first event.",
    ),
]
EventTypeName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$(?!\n)")
]
ClockTime = Annotated[
    str,
    msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$(?!\n)", description="`HH:MM`, 24 h."),
]
Platform = Literal["ios", "android", "web"]
DeliveryState = Literal["queued", "held", "sent", "failed", "dead", "suppressed"]


# -- recipients ----------------------------------------------------------------------------


class Device(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    token: DeviceToken
    platform: Platform


class UserBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A user as PUT /v1/users/{id} takes it: the whole user. A field left out is cleared,
    and `devices` replaces every device the user had."""

    email: Email | None = None
    phone: Phone | None = None
    locale: LocaleTag | None = None
    timezone: TimeZone | None = None
    devices: Annotated[list[Device], msgspec.Meta(max_length=MAX_DEVICES)] = []


class UserRecord(UserBody, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One user of a bulk import, replaced as by PUT /v1/users/{id}."""

    id: UserId


class UserImport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    users: Annotated[list[UserRecord], msgspec.Meta(min_length=1, max_length=MAX_IMPORT)]


class WebPushSubscriptionView(msgspec.Struct, frozen=True, kw_only=True):
    """A browser's Web Push subscription as stored (its keys are not shown again)."""

    endpoint: str
    expiration_time: datetime | None
    created_at: datetime


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    devices: list[Device]
    topics: list[str]
    # Newest first; set with PUT / DELETE /v1/users/{id}/webpush-subscriptions.
    webpush_subscriptions: list[WebPushSubscriptionView]
    created_at: datetime
    updated_at: datetime


class UsersImported(msgspec.Struct, frozen=True):
    users: int
    created: int


# -- events --------------------------------------------------------------------------------


class EventUser(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """A recipient given inline: created, or updated with the fields given (fields left
    out keep their stored value; devices and topics are PUT /v1/users' business)."""

    id: UserId
    email: Email | None = None
    phone: Phone | None = None
    locale: LocaleTag | None = None
    timezone: TimeZone | None = None


class Recipients(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """Exactly one of: known users by id, users given inline, a topic's members, or
    everyone (`all: true`). A list holds at most `notify.max_recipients` entries.
    Encoded without the members left out: notify_event() counts the keys present."""

    user_ids: Annotated[list[UserId], msgspec.Meta(min_length=1)] | None = None
    users: Annotated[list[EventUser], msgspec.Meta(min_length=1)] | None = None
    topic: Topic | None = None
    all: bool | None = None


class EventRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """POST /v1/events. `data` holds the variables of the type's templates; its values
    are substituted as text, never evaluated. Without `send_at` (or with one in the past)
    the event is sent now."""

    type: EventTypeName
    idempotency_key: IdempotencyKey
    recipients: Recipients
    data: dict[str, Any] = {}
    send_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class ChannelDelivery(msgspec.Struct, frozen=True, kw_only=True):
    state: DeliveryState
    # Why it is held or suppressed (see SuppressedCounts), else null.
    reason: str | None = None
    attempts: int = 0
    # Sent only if the notification was not seen in time (the type's escalation).
    escalation: bool = False
    # When a queued or held delivery is due.
    next_attempt_at: datetime | None = None
    # Of the latest attempt: the SMS/push provider that took it, and its error.
    provider: str | None = None
    error: str | None = None
    delivered_at: datetime | None = None


class NotificationStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    event_id: str
    type: str
    category: str
    # Null once the user has been erased.
    user_id: str | None
    created_at: datetime
    seen: bool
    seen_at: datetime | None
    channels: dict[str, ChannelDelivery]


# -- preferences ---------------------------------------------------------------------------


class QuietHours(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Local times in the user's time zone; a window may span midnight (22:00-07:00).
    `start` and `end` differ (the same time is `invalid_quiet_hours`)."""

    start: ClockTime
    end: ClockTime


class PreferencesBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """PUT replaces the user's preferences: switches left out fall back to the defaults.
    `muted` stops everything but transactional categories."""

    muted: bool = False
    categories: dict[str, dict[str, bool]] = {}
    quiet_hours: dict[str, QuietHours] = {}


class Preferences(msgspec.Struct, frozen=True, kw_only=True):
    """The effective switches: every category and channel, the configured defaults
    merged with the user's own. Transactional categories are always on."""

    muted: bool
    categories: dict[str, dict[str, bool]]
    quiet_hours: dict[str, QuietHours]
    transactional: list[str]


# -- inbox ---------------------------------------------------------------------------------


class InboxItem(msgspec.Struct, frozen=True, kw_only=True):
    # Mark it seen with POST /v1/seen {"tag": <notify.seen_tag>, "id": <this id>}.
    id: str
    type: str
    category: str
    title: str
    body: str
    link: str | None
    created_at: datetime
    seen: bool


class InboxPage(msgspec.Struct, frozen=True, kw_only=True):
    """Newest first. `next_cursor` fetches the next (older) page; null on the last one."""

    items: list[InboxItem]
    unseen: int
    next_cursor: str | None
    # The tag of POST /v1/seen that marks these items seen (notify.seen_tag).
    seen_tag: str


class StreamToken(msgspec.Struct, frozen=True, kw_only=True):
    """Opens GET /v1/inbox/stream for the signed-in user until `expires_at`."""

    token: str
    expires_at: datetime
    # The stream's path with the token; add `&last_event_id=` to resume.
    stream_url: str


class StreamReady(msgspec.Struct, frozen=True, kw_only=True):
    """The `ready` message: a stream starts here. `reset`: the Last-Event-ID was too old to
    resume from; reload the list (GET /v1/inbox)."""

    unseen: int
    seen_tag: str
    reset: bool


class StreamChanges(msgspec.Struct, frozen=True, kw_only=True):
    """The `changes` message: what reached the inbox (newest first) and what was marked
    seen, on any device, since the previous message."""

    items: list[InboxItem]
    seen: list[str]
    unseen: int


# -- web push ------------------------------------------------------------------------------

Base64Url = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_=-]+$(?!\n)")
]


class WebPushKeys(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    p256dh: Annotated[
        Base64Url, msgspec.Meta(description="The browser's P-256 public key (65 bytes).")
    ]
    auth: Annotated[Base64Url, msgspec.Meta(description="The 16-byte auth secret.")]


class WebPushSubscription(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A browser's PushSubscription as its toJSON() gives it (W3C Push API): the push
    service's endpoint (https, at a push service of `notify.webpush.endpoint_hosts`) and
    the keys messages are encrypted to, base64url."""

    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    # The W3C name, so that a subscription's toJSON() is the body as it is.
    expirationTime: Annotated[float, msgspec.Meta(ge=0)] | None = None
    keys: WebPushKeys


class WebPushEndpoint(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The subscription to forget, by its endpoint."""

    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class WebPushKey(msgspec.Struct, frozen=True):
    """The VAPID public key a page subscribes with: `pushManager.subscribe({
    userVisibleOnly: true, applicationServerKey: <this, base64url-decoded> })`."""

    application_server_key: str
