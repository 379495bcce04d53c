"""Configuration of the notification half: channels, categories, event types (digest
policy included) and [notify]. Part of Config (service/config/load.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import msgspec

from service.config.base import Breaker, DeliveryPolicy, Name, Positive

ChannelTransport = Literal["smtp", "provider", "inbox", "webpush"]
ChannelKind = Literal["email", "sms", "push", "inbox", "webpush"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("email", "sms", "push", "inbox", "webpush")
# The transport each kind is sent by.
KIND_TRANSPORT: dict[str, str] = {
    "email": "smtp",
    "sms": "provider",
    "push": "provider",
    "inbox": "inbox",
    "webpush": "webpush",
}
Priority = Literal["low", "normal", "high"]
# RFC 8030's Urgency header: how soon a browser's device should wake up for the message.
Urgency = Literal["very-low", "low", "normal", "high"]
Mode = Literal["instant", "digest"]
Locale = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*\Z")]


class SmtpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 25
    # Implicit TLS from the first byte (port 465), or STARTTLS after the greeting (587).
    tls: bool = False
    starttls: bool = False
    username: str | None = None
    # Keep it in the environment: MARK_NOTIFY__channels__email__smtp__password=...
    password: str | None = None
    sender: str = "mark-notify <notify@example.com>"
    reply_to: str | None = None
    # The domain of generated Message-IDs (default: the sender's).
    message_id_domain: str | None = None
    # How long an idle connection is kept for reuse.
    idle_timeout: timedelta = timedelta(seconds=30)


class Provider(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An HTTP SMS or push provider: our documented JSON request, Standard Webhooks signed."""

    name: Name
    url: str
    secret: str
    timeout: timedelta | None = None
    breaker: Breaker | None = None


# Push services of the browsers (host suffixes): Chrome's FCM, Firefox's autopush,
# Safari's and Edge's. A subscription's endpoint must be on one of them (no request goes
# anywhere a client names otherwise).
PUSH_SERVICE_HOSTS = (
    "fcm.googleapis.com",
    "push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
)


class WebPushSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Web Push (RFC 8030) with VAPID (RFC 8292): the application server's key pair, one
    for the deployment, since a browser's subscription is bound to its public key (made
    by `bin/vapid new`; service/webpush.py)."""

    # The P-256 private key: base64url of its 32 bytes. Keep it in the environment:
    # MARK_NOTIFY__notify__webpush__vapid_private_key=...
    vapid_private_key: str
    # Whom a push service may contact about this sender: a mailto: or https: URL.
    vapid_subject: str
    # Host suffixes a subscription's endpoint may have (https only; in development and
    # test also http on a loopback address).
    endpoint_hosts: list[str] = msgspec.field(default_factory=lambda: list(PUSH_SERVICE_HOSTS))


class Channel(DeliveryPolicy, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A way to reach a user. `kind` says what it carries (the templates it renders and the
    contact it needs), `transport` how: SMTP, HTTP providers tried in order (the first is
    the primary, the rest fallbacks), the in-app inbox (delivered = listed), or the
    browsers' push services (webpush, with [notify.webpush]'s keys)."""

    kind: ChannelKind
    transport: ChannelTransport
    smtp: SmtpSettings | None = None
    providers: list[Provider] = msgspec.field(default_factory=list)


class Category(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What users switch on and off. A transactional category (receipts, confirmations)
    cannot be switched off, muted or held by quiet hours."""

    transactional: bool = False
    # Channel name -> on unless the user says otherwise. Channels not listed are on.
    defaults: dict[Name, bool] = msgspec.field(default_factory=dict)
    description: str = ""
    # What the preference center calls it, per locale (ru = "..."); else the description.
    labels: dict[Locale, str] = msgspec.field(default_factory=dict)


class Escalation(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Send on `channel` after `after` unless the notification has been seen by then."""

    channel: Name
    after: timedelta


# -- digests: service/schedule/digests.py
DigestWindow = Literal["fixed", "daily", "sliding"]
# A top-level key of an event's data.
DataField = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
LocalTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z")]
# Which settings each window takes (all of them, and no other).
WINDOW_SETTINGS: dict[str, tuple[str, ...]] = {
    "fixed": ("every",),
    "daily": ("at",),
    "sliding": ("quiet", "max_wait"),
}


class DigestPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the items of a `mode = "digest"` type gather into one notification per
    recipient and digest key (e.g. likes on one comment), and when that is sent:
    - `window = "fixed"`: `every` after the digest's first item;
    - `window = "daily"`: at the next `at` (HH:MM in the recipient's time zone, UTC when
      the user has none) after the first item;
    - `window = "sliding"`: once no item came for `quiet`, at most `max_wait` after the first.
    `max_items` makes a digest due as soon as it has that many items."""

    # The data field whose value groups items (e.g. "comment_id"), and the one naming
    # who acted (e.g. "actor"); producers must send both (a string or a number).
    key: DataField
    actor: DataField | None = None
    window: DigestWindow
    every: timedelta | None = None
    at: LocalTime | None = None
    quiet: timedelta | None = None
    max_wait: timedelta | None = None
    max_items: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # How many of the first and of the last actors the templates get by name.
    show_actors: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3

    def __post_init__(self) -> None:
        wanted = WINDOW_SETTINGS[self.window]
        for name in ("every", "at", "quiet", "max_wait"):
            given = getattr(self, name) is not None
            if name in wanted and not given:
                raise ValueError(f"{name}: required by window = {self.window!r}")
            if given and name not in wanted:
                # A setting that would be silently ignored is a mistake in the file.
                raise ValueError(
                    f"{name}: not a setting of window = {self.window!r} "
                    f"(it takes {', '.join(wanted)})"
                )
        for name in ("every", "quiet", "max_wait"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name}: must be positive")
        if self.quiet is not None and self.max_wait is not None and self.quiet > self.max_wait:
            raise ValueError("quiet: longer than max_wait, so it would never apply")
        if self.actor == self.key:
            raise ValueError("actor: the same field as key")


class EventTypeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    category: Name
    # In order of preference; every one that the user has on and a contact for is sent.
    channels: Annotated[list[Name], msgspec.Meta(min_length=1)]
    mode: Mode = "instant"
    priority: Priority = "normal"
    # Web Push's Urgency header; none: the priority's (low, normal, high).
    urgency: Urgency | None = None
    # A notification not sent within ttl of its event is dropped (suppressed: expired).
    ttl: timedelta = timedelta(days=1)
    default_locale: Locale = "en"
    # The folder under config/templates/ (default: the type's name).
    templates: Name | None = None
    escalation: Escalation | None = None
    # Required when mode = "digest".
    digest: DigestPolicy | None = None
    # Template variables a producer may leave out (the templates must handle them).
    optional_data: list[str] = msgspec.field(default_factory=list)
    description: str = ""

    @property
    def push_urgency(self) -> Urgency:
        """The Urgency of its web pushes: the one set, else its priority's."""
        return self.urgency or self.priority

    def __post_init__(self) -> None:
        # -- digests
        if (self.mode == "digest") != (self.digest is not None):
            raise ValueError(
                'digest: required by mode = "digest"'
                if self.digest is None
                else 'digest: only a type of mode = "digest" has one'
            )
        if self.digest is not None:
            for name in (self.digest.key, self.digest.actor):
                if name in self.optional_data:
                    raise ValueError(f"optional_data: {name!r} groups the digest; it is required")


class InboxStreamSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """GET /v1/inbox/stream (service/notify/inbox_stream.py)."""

    # What a stream token is good for: opening streams; an open stream is not cut by it.
    token_ttl: timedelta = timedelta(minutes=5)
    # A comment line this often keeps proxies from closing an idle stream.
    heartbeat: timedelta = timedelta(seconds=15)
    # A stream ends after this and the browser reconnects, with a fresh token if needed:
    # identity is checked again, and connections spread over restarted API processes.
    max_age: timedelta = timedelta(hours=1)
    # Per API process: streams of one user, and in all.
    per_user: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    max_streams: Positive = 10_000


class NotifySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Where the links in notifications point (one-click unsubscribe, the preference center).
    public_url: str = "http://127.0.0.1:8000"
    # Signs unsubscribe and preference-center links; keep it in the environment outside
    # development.
    unsubscribe_secret: str | None = None
    unsubscribe_ttl: timedelta = timedelta(days=60)
    # How long an email's "manage notifications" link opens the preference center.
    preferences_link_ttl: timedelta = timedelta(days=60)
    # The seen tag whose marks (id = notification id) mean "the user saw this".
    seen_tag: Name = "notifications"
    max_data_bytes: Positive = 16 * 1024
    # Longest explicit recipient list (user_ids or users) in one event.
    max_recipients: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000
    # The event types' templates: <templates_dir>/<type>/<locale>.toml (relative paths are
    # from the repository root).
    templates_dir: str = "config/templates"
    # Users materialized per transaction for topic / all audiences.
    chunk_size: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 50_000
    inbox_stream: InboxStreamSettings = msgspec.field(default_factory=InboxStreamSettings)
    # Needed by a channel of kind webpush.
    webpush: WebPushSettings | None = None
