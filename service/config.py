"""Configuration: msgspec Structs parsed from a TOML file, overridden by the environment.

A wrong file fails at start-up with the file, the key and the reason. Environment:
- `MARK_NOTIFY_CONFIG`: the file (default `config/mark-notify.toml`);
- `DATABASE_URL`, `MARK_NOTIFY_ENV`: the database and the environment;
- `MARK_NOTIFY__<section>__<key>...=<value>`: any key. An array, inline table or quoted
  string is read as TOML; any other value is text, converted where the key wants a
  number, boolean or duration. Secrets belong here, e.g.
  `MARK_NOTIFY__consumers__promotions__secret=whsec_...`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "mark-notify.toml"
ENV_PREFIX = "MARK_NOTIFY__"

EventType = Literal["client", "driver", "anonymous"]
EVENT_TYPES: tuple[EventType, ...] = ("client", "driver", "anonymous")
Transport = Literal["http", "kafka"]
Environment = Literal["development", "test", "production"]

# `\Z`, not `$`: Python's `$` also matches before a final newline.
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(ValueError):
    pass


class Backoff(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Delay before attempt n+1 is min(cap, initial * factor**(n-1)), with full jitter."""

    initial: timedelta = timedelta(seconds=1)
    factor: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    cap: timedelta = timedelta(minutes=10)


class Breaker(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Pauses a consumer after `failures` transient failures in a row, then probes it with
    one row after `cooldown` (doubling per failed probe, up to `max_cooldown`)."""

    failures: Positive = 5
    cooldown: timedelta = timedelta(seconds=30)
    max_cooldown: timedelta = timedelta(minutes=5)


class DeliveryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the dispatcher treats one outbox destination (a seen consumer or a channel):
    timeouts, retry budget, concurrency, rate limit and circuit breaker."""

    timeout: timedelta = timedelta(seconds=5)
    max_attempts: Positive | None = None
    max_age: timedelta | None = None
    backoff: Backoff = Backoff()
    concurrency: Positive = 16
    rate_limit: Annotated[float, msgspec.Meta(gt=0)] | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500
    enabled: bool = True
    ordered: bool = False
    breaker: Breaker = Breaker()


class Consumer(DeliveryPolicy, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A service that owns some tags and receives their seen facts."""

    transport: Transport
    url: str | None = None
    # Kafka: overrides the per-event-type topic of [kafka.topics].
    topic: str | None = None
    # Standard Webhooks signing secret, "whsec_<base64>"; keep it out of files (see above).
    secret: str | None = None


class Tag(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A notification type: who owns it, whose marks it takes, how long they are kept.

    Without a consumer the marks are only remembered, not delivered anywhere: the tag of
    the service's own notifications (see [notify].seen_tag) needs nobody to be told."""

    consumer: Name | None = None
    event_type: EventType
    remember_for: timedelta


class ClaimMap(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which JWT claim carries which subject field."""

    kind: str = "kind"
    user_id: str = "sub"
    uid: str = "uid"
    bound_uids: str = "bound_uids"
    phone_id: str = "phone_id"
    db_id: str = "db_id"
    uuid: str = "uuid"


class JwtSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    audience: str
    issuer: str
    algorithms: list[Literal["HS256", "RS256"]] = msgspec.field(default_factory=lambda: ["HS256"])
    # HS256 shared secret; only from the environment outside development.
    secret: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    leeway: timedelta = timedelta(seconds=30)
    claims: ClaimMap = ClaimMap()


class GatewayHeaders(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    uid: str = "X-Yandex-UID"
    user_id: str = "X-YaTaxi-UserId"
    phone_id: str = "X-YaTaxi-PhoneId"
    bound_uids: str = "X-YaTaxi-Bound-Uids"
    db_id: str = "X-YaTaxi-Park-Id"
    uuid: str = "X-YaTaxi-Driver-Profile-Id"


class GatewaySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Identity headers set by a trusted gateway; honoured only from trusted_peers."""

    enabled: bool = False
    trusted_peers: list[str] = msgspec.field(default_factory=list)
    headers: GatewayHeaders = GatewayHeaders()


class IdentitySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    jwt: JwtSettings | None = None
    gateway: GatewaySettings = GatewaySettings()


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: str | None = None
    pool_min: Positive = 2
    pool_max: Positive = 16
    connect_timeout: timedelta = timedelta(seconds=5)
    # How long a request waits for a pooled connection before answering 503.
    acquire_timeout: timedelta = timedelta(seconds=3)


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_body_bytes: Positive = 64 * 1024
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    retry_after_s: Positive = 2


class KafkaSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: dict[EventType, str] = msgspec.field(
        default_factory=lambda: {t: f"mark-notify.seen.{t}" for t in EVENT_TYPES}
    )
    # Off only for brokers that reject the idempotent-producer handshake (Tansu in tests).
    enable_idempotence: bool = True
    linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 5
    request_timeout: timedelta = timedelta(seconds=10)


class DispatcherSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Default: host-pid. It is written into claimed rows, so ops can tell who holds them.
    name: str | None = None
    # How long a claim holds its rows; a dead dispatcher's rows are due again after it. The
    # dispatcher raises it per consumer to cover a batch's worst case (timeout x rounds),
    # so a live, slow dispatcher's rows are never claimed twice.
    lease: timedelta = timedelta(seconds=60)
    # The slow poll that bounds the delay of a lost wake-up.
    sweep_interval: timedelta = timedelta(seconds=5)
    # How often waiting rows of disabled or unknown consumers are counted and reported.
    census_interval: timedelta = timedelta(seconds=60)
    pool_max: Positive = 8


# The notification half: channels, categories and event types.

ChannelTransport = Literal["smtp", "provider", "inbox"]
ChannelKind = Literal["email", "sms", "push", "inbox"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("email", "sms", "push", "inbox")
Priority = Literal["low", "normal", "high"]
Mode = Literal["instant"]
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


class Channel(DeliveryPolicy, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A way to reach a user. `kind` says what it carries (the templates it renders and the
    contact it needs), `transport` how: SMTP, HTTP providers tried in order (the first is
    the primary, the rest fallbacks), or the in-app inbox (delivered = listed)."""

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


class Escalation(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Send on `channel` after `after` unless the notification has been seen by then."""

    channel: Name
    after: timedelta


class EventTypeSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    category: Name
    # In order of preference; every one that the user has on and a contact for is sent.
    channels: Annotated[list[Name], msgspec.Meta(min_length=1)]
    mode: Mode = "instant"
    priority: Priority = "normal"
    # A notification not sent within ttl of its event is dropped (suppressed: expired).
    ttl: timedelta = timedelta(days=1)
    default_locale: Locale = "en"
    # The folder under config/templates/ (default: the type's name).
    templates: Name | None = None
    escalation: Escalation | None = None
    # Template variables a producer may leave out (the templates must handle them).
    optional_data: list[str] = msgspec.field(default_factory=list)
    description: str = ""


class NotifySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Where the links in notifications point (one-click unsubscribe).
    public_url: str = "http://127.0.0.1:8000"
    # Signs unsubscribe links; keep it in the environment outside development.
    unsubscribe_secret: str | None = None
    unsubscribe_ttl: timedelta = timedelta(days=60)
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


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    environment: Environment = "production"
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    identity: IdentitySettings = IdentitySettings()
    kafka: KafkaSettings = KafkaSettings()
    dispatcher: DispatcherSettings = DispatcherSettings()
    consumers: dict[Name, Consumer] = msgspec.field(default_factory=dict)
    tags: dict[Name, Tag] = msgspec.field(default_factory=dict)
    notify: NotifySettings = NotifySettings()
    channels: dict[Name, Channel] = msgspec.field(default_factory=dict)
    categories: dict[Name, Category] = msgspec.field(default_factory=dict)
    event_types: dict[Name, EventTypeSettings] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tag in self.tags.items():
            if tag.remember_for <= timedelta(0):
                raise ValueError(f"tags.{name}.remember_for: must be positive")
            if tag.consumer is None:
                continue
            if tag.consumer not in self.consumers:
                raise ValueError(f"tags.{name}.consumer: no consumer named {tag.consumer!r}")
            consumer = self.consumers[tag.consumer]
            if (
                consumer.transport == "kafka"
                and not consumer.topic
                and tag.event_type not in self.kafka.topics
            ):
                # Caught here rather than as "failed" rows at delivery time.
                raise ValueError(
                    f"tags.{name}: consumer {tag.consumer!r} has no topic and kafka.topics "
                    f"has none for {tag.event_type!r} events"
                )
        for name, consumer in self.consumers.items():
            where = f"consumers.{name}"
            if consumer.transport == "http":
                if not consumer.url or not re.match(r"^https?://", consumer.url):
                    raise ValueError(f"{where}.url: an http consumer needs an http(s) URL")
                if not consumer.secret:
                    raise ValueError(f"{where}.secret: an http consumer needs a signing secret")
                if not consumer.secret.startswith("whsec_"):
                    raise ValueError(f"{where}.secret: expected 'whsec_<base64>'")
            if consumer.timeout <= timedelta(0):
                raise ValueError(f"{where}.timeout: must be positive")
            if consumer.backoff.initial <= timedelta(0) or consumer.backoff.cap <= timedelta(0):
                raise ValueError(f"{where}.backoff: initial and cap must be positive")
            if consumer.breaker.cooldown <= timedelta(0):
                raise ValueError(f"{where}.breaker.cooldown: must be positive")
        self._check_notify()
        for key in ("lease", "sweep_interval", "census_interval"):
            if getattr(self.dispatcher, key) <= timedelta(0):
                raise ValueError(f"dispatcher.{key}: must be positive")
        for peer in self.identity.gateway.trusted_peers:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError as exc:
                raise ValueError(f"identity.gateway.trusted_peers: {exc}") from None
        if self.identity.gateway.enabled and not self.identity.gateway.trusted_peers:
            raise ValueError("identity.gateway.trusted_peers: required when the gateway is on")

    def _check_notify(self) -> None:
        clash = set(self.channels) & set(self.consumers)
        if clash:
            # Both are outbox destinations, named in one column.
            raise ValueError(f"channels.{min(clash)}: a consumer has the same name")
        for name, channel in self.channels.items():
            where = f"channels.{name}"
            expected = {"email": "smtp", "sms": "provider", "push": "provider", "inbox": "inbox"}
            if channel.transport != expected[channel.kind]:
                raise ValueError(
                    f"{where}.transport: a {channel.kind} channel uses {expected[channel.kind]!r}"
                )
            if channel.transport == "smtp" and channel.smtp is None:
                raise ValueError(f"{where}.smtp: an smtp channel needs its server settings")
            if channel.transport == "provider":
                if not channel.providers:
                    raise ValueError(f"{where}.providers: at least one provider is needed")
                names = [p.name for p in channel.providers]
                if len(set(names)) != len(names):
                    raise ValueError(f"{where}.providers: provider names must differ")
                for n, provider in enumerate(channel.providers):
                    if not re.match(r"^https?://", provider.url):
                        raise ValueError(f"{where}.providers[{n}].url: an http(s) URL is needed")
                    if not provider.secret.startswith("whsec_"):
                        raise ValueError(
                            f"{where}.providers[{n}].secret: expected 'whsec_<base64>'"
                        )
            if channel.timeout <= timedelta(0):
                raise ValueError(f"{where}.timeout: must be positive")
            if channel.ordered:
                raise ValueError(f"{where}.ordered: only seen consumers can be ordered")
        for name, category in self.categories.items():
            for channel_name in category.defaults:
                if channel_name not in self.channels:
                    raise ValueError(
                        f"categories.{name}.defaults: no channel named {channel_name!r}"
                    )
        for name, event_type in self.event_types.items():
            where = f"event_types.{name}"
            if event_type.category not in self.categories:
                raise ValueError(f"{where}.category: no category named {event_type.category!r}")
            for channel_name in event_type.channels:
                if channel_name not in self.channels:
                    raise ValueError(f"{where}.channels: no channel named {channel_name!r}")
            if len(set(event_type.channels)) != len(event_type.channels):
                raise ValueError(f"{where}.channels: a channel is listed twice")
            if event_type.ttl <= timedelta(0):
                raise ValueError(f"{where}.ttl: must be positive")
            escalation = event_type.escalation
            if escalation is not None:
                if escalation.channel not in self.channels:
                    raise ValueError(
                        f"{where}.escalation.channel: no channel named {escalation.channel!r}"
                    )
                if escalation.channel in event_type.channels:
                    raise ValueError(
                        f"{where}.escalation.channel: {escalation.channel!r} is already one of "
                        "the type's channels"
                    )
                if escalation.after <= timedelta(0):
                    raise ValueError(f"{where}.escalation.after: must be positive")
        if self.event_types:
            tag = self.tags.get(self.notify.seen_tag)
            if tag is None or tag.event_type != "client":
                raise ValueError(
                    f"notify.seen_tag: {self.notify.seen_tag!r} must be a configured tag of "
                    "event_type 'client' (users mark notifications seen with it)"
                )


def _env_value(raw: str) -> Any:
    # Arrays, inline tables and quoted strings are read as TOML. Anything else stays text:
    # parsing converts text to a number or boolean where the key wants one, and a secret
    # such as "12345" must stay a string.
    if raw.lstrip()[:1] not in ("[", "{", '"', "'"):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay environment variables on the file's data (see the module docstring)."""
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p for p in key[len(ENV_PREFIX) :].split("__") if p]
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {key}: {part!r} is not a table")
        if path:
            node[path[-1]] = _env_value(raw)
    if url := environ.get("DATABASE_URL"):
        data.setdefault("database", {})["url"] = url
    if env := environ.get("MARK_NOTIFY_ENV"):
        data["environment"] = env
    return data


def parse_config(data: dict[str, Any], source: str) -> Config:
    # msgspec hides mapping keys in its error paths ("$.consumers[...]"); check the named
    # entries one by one first so the message names the consumer or tag.
    named: tuple[tuple[str, type[msgspec.Struct]], ...] = (
        ("consumers", Consumer),
        ("tags", Tag),
        ("channels", Channel),
        ("categories", Category),
        ("event_types", EventTypeSettings),
    )
    for section, entry_type in named:
        entries = data.get(section)
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            try:
                msgspec.convert(name, Name)
            except msgspec.ValidationError:
                raise ConfigError(
                    f"{source}: {section}.{name!r}: a name is 1-64 of a-z 0-9 _ . -, "
                    "starting with a letter or digit"
                ) from None
            try:
                msgspec.convert(entry, entry_type, strict=False)
            except msgspec.ValidationError as exc:
                message = str(exc).replace("`$", f"`$.{section}.{name}")
                if " - at `" not in message:
                    message += f" - at `$.{section}.{name}`"
                raise ConfigError(f"{source}: {message}") from None
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    file = path or Path(env.get("MARK_NOTIFY_CONFIG", DEFAULT_CONFIG))
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file (set MARK_NOTIFY_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return parse_config(apply_env(data, env), str(file))
