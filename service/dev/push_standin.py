"""bin/dev's stand-in for a browser's push service (service/dev/peers.py mounts it on its
HTTP stand-ins): `POST /webpush/<name>` takes Web Push messages for the demo browser
whose subscription docs/webpush.md registers, checks the VAPID token against the
config's key as a push service does, decrypts the message with the demo browser's keys
and shows it. Development only: the demo browser's private key is public, here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import http_ece
import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import Response

from service import webpush

# The demo browser: its subscription keys (p256dh, auth) and the private half of p256dh.
DEMO_P256DH = (
    "BKXAZFPjwmjB4t45_5Uc1OMFtmneRdNGEK4QMgf9DRKOzfjNgCexfT53dFjVz-H89wrlh0-uH8WEJfM_iSMq664"
)
DEMO_AUTH = "Gubf97fbAX_fp_Kd9nQNTw"
_DEMO_KEY = "c-kXhDbMXUiH2hXtU6f-8jbzbtIooKZHQRH86e9mgyc"


def _claims(authorization: str, public_key: str, origin: str) -> dict[str, Any]:
    """The VAPID token's claims, verified as a push service does; ValueError if not."""
    scheme, _, rest = authorization.partition(" ")
    params = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
    if scheme.lower() != "vapid" or params.get("k") != public_key:
        raise ValueError("not this application server's VAPID key")
    key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), webpush.b64url_decode(public_key)
    )
    try:
        claims: dict[str, Any] = jwt.decode(
            params.get("t", ""), key, algorithms=["ES256"], audience=origin
        )
    except jwt.PyJWTError as exc:
        raise ValueError(f"VAPID token refused: {exc}") from None
    return claims


def push_service(vapid_private_key: str, say: Callable[[str], None]) -> Callable[[Request], Any]:
    """The endpoint's handler, for the config's VAPID key."""
    public_key = webpush.public_key_text(webpush.private_key(vapid_private_key))
    browser = webpush.private_key(_DEMO_KEY)
    auth = webpush.b64url_decode(DEMO_AUTH)

    async def receive(request: Request) -> Response:
        name = request.path_params["name"]
        origin = f"{request.url.scheme}://{request.url.netloc}"
        try:
            _claims(request.headers.get("authorization", ""), public_key, origin)
        except ValueError as exc:
            say(f"web push to {name}: {exc}; answered 401")
            return Response(b"bad VAPID token", 401)
        try:
            plain = http_ece.decrypt(
                await request.body(), private_key=browser, auth_secret=auth, version="aes128gcm"
            )
            message = msgspec.json.decode(plain)
        except Exception:
            say(f"web push to {name}: not for the demo browser's keys; answered 410 (gone)")
            return Response(b"unknown subscription", 410)
        headers = request.headers
        say(
            f"web push to {name}: {message.get('title')!r}, VAPID verified "
            f"(TTL {headers.get('ttl')}, Urgency {headers.get('urgency')})"
        )
        return Response(b"", 201)

    return receive
