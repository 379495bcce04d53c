"""Web Push's rules shared by the API, the dispatcher and the CLI: the VAPID key pair
(RFC 8292), what a subscription's keys are (RFC 8291), and where its endpoint may be.

Keys travel as base64url without padding, as browsers and every Web Push library write
them: the private key as its 32 bytes, public keys as uncompressed P-256 points (65 bytes,
the `applicationServerKey` a page subscribes with), the auth secret as 16 bytes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.config.notify import WebPushSettings

PUBLIC_KEY_BYTES = 65
AUTH_SECRET_BYTES = 16
PRIVATE_KEY_BYTES = 32
ENDPOINT_MAX = 2048
_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}\Z")
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?)\Z")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """base64url, padded or not; ValueError for anything else (standard base64's + and /
    included: browsers never send those)."""
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key of [notify.webpush]; ValueError if it is not one."""
    raw = b64url_decode(text)
    if len(raw) != PRIVATE_KEY_BYTES:
        raise ValueError(f"a VAPID private key is {PRIVATE_KEY_BYTES} bytes, base64url")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """The public half, as a page's `applicationServerKey` and VAPID's `k` take it."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def new_private_key() -> str:
    """A new VAPID private key, as [notify.webpush] vapid_private_key takes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(PRIVATE_KEY_BYTES, "big"))


def check_subject(subject: str) -> None:
    if not _SUBJECT.match(subject):
        raise ValueError("a mailto: address or an https: URL, whom push services may contact")


def check_keys(p256dh: str, auth: str) -> None:
    """A subscription's keys: an uncompressed P-256 point on the curve, a 16-byte secret;
    ValueError naming the one that is not."""
    try:
        point = b64url_decode(p256dh)
        if len(point) != PUBLIC_KEY_BYTES or point[0] != 4:
            raise ValueError
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError(
            f"keys.p256dh: base64url of an uncompressed P-256 point ({PUBLIC_KEY_BYTES} bytes)"
        ) from None
    try:
        secret = b64url_decode(auth)
    except ValueError:
        secret = b""
    if len(secret) != AUTH_SECRET_BYTES:
        raise ValueError(f"keys.auth: base64url of {AUTH_SECRET_BYTES} bytes")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_endpoint(url: str, settings: WebPushSettings, environment: str) -> None:
    """An endpoint the dispatcher may POST to: https on a host of `endpoint_hosts` (a
    suffix at a dot), or in development and test http(s) on loopback; ValueError else."""
    # Its path goes into a request line as it is: no spaces or control characters.
    if len(url) > ENDPOINT_MAX or not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError(f"endpoint: an URL of at most {ENDPOINT_MAX} printable ASCII characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (raises on a port that is not one)
    except ValueError:
        raise ValueError("endpoint: not an URL") from None
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError("endpoint: an URL without credentials or fragment")
    if environment in ("development", "test") and _loopback(host):
        if parts.scheme in ("http", "https"):
            return
    if parts.scheme != "https" or not host:
        raise ValueError("endpoint: an https URL")
    if not any(host == h or host.endswith("." + h) for h in settings.endpoint_hosts):
        raise ValueError(
            "endpoint: not at a known push service (notify.webpush.endpoint_hosts: "
            + ", ".join(settings.endpoint_hosts)
            + ")"
        )


def origin(url: str) -> str:
    """scheme://host[:port] of an endpoint: VAPID's audience, and what a breaker guards."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
