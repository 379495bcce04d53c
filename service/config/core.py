"""The core's sections: [identity], [database], [api], [kafka] and [dispatcher].
Part of Config (service/config/load.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import msgspec

from service.config.base import EVENT_TYPES, EventType, Positive


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


DatabaseMode = Literal["single", "citus"]


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: str | None = None
    # "citus": the database is a Citus coordinator; service.migrate distributes the tables
    # that grow with traffic on their bucket (docs/scaling.md). Nothing else reads it.
    mode: DatabaseMode = "single"
    pool_min: Positive = 2
    pool_max: Positive = 16
    connect_timeout: timedelta = timedelta(seconds=5)
    # How long a request waits for a pooled connection before answering 503.
    acquire_timeout: timedelta = timedelta(seconds=3)


# An origin as a browser sends it: scheme, host, port; no path, lowercase.
ORIGIN_PATTERN = r"^https?://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$(?!\n)"


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_body_bytes: Positive = 64 * 1024
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    retry_after_s: Positive = 2
    # Other sites whose pages may call the browser-facing endpoints (service/cors.py);
    # none by default: same-origin only. "*" is any site, written out on purpose.
    cors_origins: list[Annotated[str, msgspec.Meta(pattern=rf"{ORIGIN_PATTERN}|^\*$(?!\n)")]] = (
        msgspec.field(default_factory=list)
    )


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
    # How long a dispatcher holds its buckets (dispatcher/bucket_leases.py): a dead
    # dispatcher's buckets are taken over this long after its last renewal.
    bucket_lease: timedelta = timedelta(seconds=15)
    # The slow poll that bounds the delay of a lost wake-up.
    sweep_interval: timedelta = timedelta(seconds=5)
    # How often waiting rows of disabled or unknown consumers are counted and reported.
    census_interval: timedelta = timedelta(seconds=60)
    pool_max: Positive = 8
    # GET /metrics of this dispatcher (docs/observability.md); 0: none. Loopback by
    # default: set "0.0.0.0" where Prometheus scrapes from another host or container.
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464
    metrics_host: str = "127.0.0.1"
