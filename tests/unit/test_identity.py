"""Identity: the subject of a mark comes from a verified JWT or a trusted gateway only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.datastructures import Headers

from service.config.base import ROOT, ConfigError
from service.config.core import (
    ClaimMap,
    GatewayHeaders,
    GatewaySettings,
    IdentitySettings,
    JwtSettings,
)
from service.errors import ApiError
from service.identity import ANONYMOUS, Authenticator, Caller, check_caller
from service.wire import AnonymousSubject, ClientSubject, DriverSubject
from tests.support import AUDIENCE, ISSUER, JWT_SECRET, token

PrivateKey = rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[PrivateKey, PrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300} | extra


def rs_token(key: PrivateKey, body: dict[str, Any], kid: str | None = None) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, key, algorithm="RS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_hs256(body: dict[str, Any], secret: bytes) -> str:
    """An HS256 token made by hand, for keys PyJWT itself refuses to sign with."""
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing_input = f"{b64(header)}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def settings(
    *,
    algorithms: list[Any] | None = None,
    secret: str | None = JWT_SECRET,
    public_key_file: str | None = None,
    jwks_file: str | None = None,
    claim_map: ClaimMap | None = None,
    gateway: GatewaySettings | None = None,
    with_jwt: bool = True,
) -> IdentitySettings:
    jwt_settings = JwtSettings(
        audience=AUDIENCE,
        issuer=ISSUER,
        algorithms=algorithms or ["HS256"],
        secret=secret,
        public_key_file=public_key_file,
        jwks_file=jwks_file,
        claims=claim_map or ClaimMap(),
    )
    return IdentitySettings(
        jwt=jwt_settings if with_jwt else None, gateway=gateway or GatewaySettings()
    )


def authenticate(
    auth: Authenticator, headers: dict[str, str], peer: str | None = "127.0.0.1"
) -> Caller:
    return auth.authenticate(Headers(headers=headers), peer)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def assert_invalid_token(auth: Authenticator, tok: str, reason: str = "") -> None:
    with pytest.raises(ApiError) as err:
        authenticate(auth, bearer(tok))
    assert (err.value.status, err.value.code) == (401, "invalid_token")
    assert reason in err.value.message


HS = Authenticator(settings(), "test")


def test_client_token_maps_claims_to_client_fields() -> None:
    tok = token(
        {"kind": "client", "sub": "u-1", "uid": 42, "bound_uids": ["7", 8], "phone_id": "ph-1"}
    )
    caller = authenticate(HS, bearer(tok))
    assert caller == Caller(
        "client",
        ClientSubject(user_id="u-1", uid="42", bound_uids=["7", "8"], phone_id="ph-1"),
        "client:u-1",
    )


def test_client_token_optional_fields() -> None:
    caller = authenticate(HS, bearer(token({"kind": "client", "sub": "u-2", "bound_uids": "a, b"})))
    assert caller.subject == ClientSubject(user_id="u-2", uid=None, bound_uids=["a", "b"])


def test_driver_token_maps_claims_to_driver_fields() -> None:
    caller = authenticate(HS, bearer(token({"kind": "driver", "db_id": "park", "uuid": "drv"})))
    assert caller == Caller("driver", DriverSubject(db_id="park", uuid="drv"), "driver:park:drv")


def test_configured_claim_names() -> None:
    names = ClaimMap(kind="typ", user_id="user", db_id="park_id", uuid="profile_id")
    auth = Authenticator(settings(claim_map=names), "test")
    client = authenticate(auth, bearer(token({"typ": "client", "user": "u-9", "sub": "other"})))
    assert client.subject == ClientSubject(user_id="u-9")
    driver = authenticate(
        auth, bearer(token({"typ": "driver", "park_id": "p", "profile_id": "d", "uuid": "x"}))
    )
    assert driver.subject == DriverSubject(db_id="p", uuid="d")
    # The default claim names mean nothing under this map.
    assert_invalid_token(auth, token({"kind": "client", "sub": "u-9"}), "'typ'")


def test_a_remembered_token_still_expires() -> None:
    strict = JwtSettings(audience=AUDIENCE, issuer=ISSUER, secret=JWT_SECRET, leeway=timedelta(0))
    auth = Authenticator(IdentitySettings(jwt=strict), "test")
    exp = int(time.time()) + 1
    tok = jwt.encode(claims(kind="client", sub="u", exp=exp), JWT_SECRET)
    assert authenticate(auth, bearer(tok)).subject == ClientSubject(user_id="u")
    assert authenticate(auth, bearer(tok)).subject == ClientSubject(user_id="u")
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert_invalid_token(auth, tok, "expired")
    # A token that failed is not remembered as good; another signature is another token.
    assert_invalid_token(auth, tok, "expired")
    fresh = token({"kind": "client", "sub": "u"})
    assert authenticate(auth, bearer(fresh)).kind == "client"
    assert_invalid_token(auth, fresh.rsplit(".", 1)[0] + "." + b64(bytes(32)), "Signature")


def test_leeway_accepts_a_just_expired_token() -> None:
    assert authenticate(HS, bearer(token({"kind": "client", "sub": "u"}, ttl=-5))).kind == "client"


def test_the_leeway_is_30_seconds_by_default() -> None:
    # As docs/api.md and docs/security.md say: a token is accepted up to 30 s past its exp,
    # and one its issuer dates up to 30 s ahead (a clock that runs fast) is not refused.
    assert JwtSettings(audience=AUDIENCE, issuer=ISSUER).leeway == timedelta(seconds=30)
    assert authenticate(HS, bearer(token({"kind": "client", "sub": "u"}, ttl=-25))).kind == "client"
    assert_invalid_token(HS, token({"kind": "client", "sub": "u"}, ttl=-35), "expired")
    ahead = int(time.time()) + 25
    tok = jwt.encode(claims(kind="client", sub="u", iat=ahead, nbf=ahead), JWT_SECRET)
    assert authenticate(HS, bearer(tok)).kind == "client"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token({"kind": "client", "sub": "u"}, secret="x" * 40), "Signature"),
        (lambda: token({"kind": "client", "sub": "u"}, ttl=-120), "expired"),
        (lambda: token({"kind": "client", "sub": "u", "aud": "someone-else"}), "Audience"),
        (lambda: token({"kind": "client", "sub": "u", "iss": "evil"}), "issuer"),
        (
            lambda: jwt.encode(
                {"aud": AUDIENCE, "iss": ISSUER, "kind": "client", "sub": "u"}, JWT_SECRET
            ),
            '"exp"',
        ),
        (
            lambda: jwt.encode(
                {"iss": ISSUER, "exp": time.time() + 60, "kind": "client", "sub": "u"}, JWT_SECRET
            ),
            '"aud"',
        ),
        (
            lambda: jwt.encode(
                {"aud": AUDIENCE, "exp": time.time() + 60, "kind": "client", "sub": "u"}, JWT_SECRET
            ),
            '"iss"',
        ),
        (lambda: token({"kind": "client", "sub": "u", "nbf": time.time() + 3600}), "yet valid"),
        (lambda: jwt.encode(claims(kind="client", sub="u"), "", algorithm="none"), "'none'"),
        (lambda: "not.a.jwt", ""),
        (lambda: "garbage", ""),
        (lambda: token({"sub": "u"}), "'kind'"),
        (lambda: token({"kind": "admin", "sub": "u"}), "'kind'"),
        (lambda: token({"kind": "client"}), "'sub'"),
        (lambda: token({"kind": "client", "sub": ""}), "'sub'"),
        (lambda: token({"kind": "driver", "db_id": "p"}), "'uuid'"),
    ],
    ids=[
        "bad signature",
        "expired",
        "wrong audience",
        "wrong issuer",
        "missing exp",
        "missing aud",
        "missing iss",
        "not yet valid",
        "alg none",
        "malformed",
        "not a jwt",
        "no kind",
        "unknown kind",
        "client without sub",
        "client with empty sub",
        "driver without uuid",
    ],
)
def test_invalid_tokens_are_refused(make: Any, reason: str) -> None:
    assert_invalid_token(HS, make(), reason)


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
def test_malformed_authorization_header(value: str) -> None:
    with pytest.raises(ApiError) as err:
        authenticate(HS, {"Authorization": value})
    assert (err.value.status, err.value.code) == (401, "invalid_token")


def test_bearer_scheme_is_case_insensitive() -> None:
    tok = token({"kind": "client", "sub": "u"})
    assert authenticate(HS, {"Authorization": f"bearer {tok}"}).kind == "client"


def test_no_identity_is_anonymous() -> None:
    assert authenticate(HS, {}) is ANONYMOUS


def test_tokens_refused_when_jwt_is_not_configured() -> None:
    auth = Authenticator(settings(with_jwt=False), "test")
    assert_invalid_token(auth, token({"kind": "client", "sub": "u"}), "not accepted")


def test_rs256_with_public_key_file(
    tmp_path: Path, rsa_keys: tuple[PrivateKey, PrivateKey]
) -> None:
    good, other = rsa_keys
    pem = tmp_path / "auth.pem"
    pem.write_bytes(public_pem(good))
    auth = Authenticator(
        settings(algorithms=["RS256"], secret=None, public_key_file=str(pem)), "test"
    )
    caller = authenticate(auth, bearer(rs_token(good, claims(kind="client", sub="rs-user"))))
    assert caller.subject == ClientSubject(user_id="rs-user")
    # Signed by another key, expired, or for another audience: refused.
    assert_invalid_token(auth, rs_token(other, claims(kind="client", sub="u")), "Signature")
    expired = claims(kind="client", sub="u", exp=int(time.time()) - 120)
    assert_invalid_token(auth, rs_token(good, expired), "expired")
    assert_invalid_token(auth, rs_token(good, claims(kind="client", sub="u", aud="x")), "Audience")
    # HS256 is not configured, so even a token with the right shared secret is refused.
    assert_invalid_token(auth, token({"kind": "client", "sub": "u"}), "'HS256'")


def test_rs256_key_file_relative_to_the_project(
    tmp_path: Path, rsa_keys: tuple[PrivateKey, PrivateKey]
) -> None:
    pem = tmp_path / "auth.pem"
    pem.write_bytes(public_pem(rsa_keys[0]))
    relative = os.path.relpath(pem, ROOT)
    auth = Authenticator(
        settings(algorithms=["RS256"], secret=None, public_key_file=relative), "test"
    )
    assert authenticate(auth, bearer(rs_token(rsa_keys[0], claims(kind="client", sub="u")))).kind


@pytest.mark.parametrize("algorithms", [["RS256"], ["HS256", "RS256"]])
def test_algorithm_confusion_is_refused(
    tmp_path: Path, rsa_keys: tuple[PrivateKey, PrivateKey], algorithms: list[Any]
) -> None:
    """An HS256 token "signed" with the public RSA key as the HMAC secret never passes."""
    pem_bytes = public_pem(rsa_keys[0])
    pem = tmp_path / "auth.pem"
    pem.write_bytes(pem_bytes)
    secret = JWT_SECRET if "HS256" in algorithms else None
    auth = Authenticator(
        settings(algorithms=algorithms, secret=secret, public_key_file=str(pem)), "test"
    )
    body = claims(kind="client", sub="attacker")
    assert_invalid_token(auth, forged_hs256(body, pem_bytes))
    assert_invalid_token(auth, forged_hs256(body, pem_bytes.strip()))
    # The forgery is well formed: the same construction with the real secret passes.
    if secret:
        assert authenticate(auth, bearer(forged_hs256(body, secret.encode()))).kind == "client"


def test_rs256_with_jwks_file(tmp_path: Path, rsa_keys: tuple[PrivateKey, PrivateKey]) -> None:
    first, second = rsa_keys
    jwks = {
        "keys": [
            json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())) | {"kid": kid}
            for k, kid in ((first, "k1"), (second, "k2"))
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    auth = Authenticator(settings(algorithms=["RS256"], secret=None, jwks_file=str(path)), "test")
    body = claims(kind="driver", db_id="p", uuid="d")
    assert authenticate(auth, bearer(rs_token(first, body, "k1"))).subject == DriverSubject(
        "p", "d"
    )
    assert authenticate(auth, bearer(rs_token(second, body, "k2"))).kind == "driver"
    # The key named by kid must be the one that signed; unknown kids are refused.
    assert_invalid_token(auth, rs_token(first, body, "k2"), "Signature")
    assert_invalid_token(auth, rs_token(first, body, "k3"), "'k3'")
    assert_invalid_token(auth, rs_token(first, body), "None")


def test_identity_settings_that_cannot_work_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RS256 needs public_key_file or jwks_file"):
        Authenticator(settings(algorithms=["RS256"], secret=None), "test")
    with pytest.raises(ConfigError, match="required for HS256"):
        Authenticator(settings(secret=None), "test")
    with pytest.raises(ConfigError, match="development secret"):
        Authenticator(settings(secret="dev-only-secret-0123456789"), "production")
    Authenticator(settings(secret="dev-only-secret-0123456789"), "development")
    with pytest.raises(FileNotFoundError):
        Authenticator(
            settings(algorithms=["RS256"], public_key_file=str(tmp_path / "missing.pem")), "test"
        )


GATEWAY = GatewaySettings(enabled=True, trusted_peers=["127.0.0.1/32", "10.0.0.0/8", "::1"])
CLIENT_HEADERS = {
    "X-YaTaxi-UserId": "gw-user",
    "X-Yandex-UID": "4001",
    "X-YaTaxi-PhoneId": "gw-phone",
    "X-YaTaxi-Bound-Uids": "4002,4003",
}
DRIVER_HEADERS = {"X-YaTaxi-Park-Id": "gw-park", "X-YaTaxi-Driver-Profile-Id": "gw-driver"}


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3", "::1"])
def test_gateway_headers_from_a_trusted_peer(peer: str) -> None:
    auth = Authenticator(settings(gateway=GATEWAY), "test")
    client = authenticate(auth, CLIENT_HEADERS, peer)
    assert client == Caller(
        "client",
        ClientSubject(
            user_id="gw-user", uid="4001", bound_uids=["4002", "4003"], phone_id="gw-phone"
        ),
        "client:gw-user",
    )
    driver = authenticate(auth, DRIVER_HEADERS, peer)
    assert driver == Caller(
        "driver", DriverSubject("gw-park", "gw-driver"), "driver:gw-park:gw-driver"
    )


def test_gateway_empty_bound_uids() -> None:
    auth = Authenticator(settings(gateway=GATEWAY), "test")
    caller = authenticate(auth, {"X-YaTaxi-UserId": "u", "X-YaTaxi-Bound-Uids": ""})
    assert caller.subject == ClientSubject(user_id="u", bound_uids=[])


@pytest.mark.parametrize("peer", ["127.0.0.2", "192.168.1.1", "::2", None, "not-an-ip"])
def test_gateway_headers_from_untrusted_peers_are_ignored(peer: str | None) -> None:
    auth = Authenticator(settings(gateway=GATEWAY), "test")
    assert authenticate(auth, CLIENT_HEADERS, peer) is ANONYMOUS
    assert authenticate(auth, DRIVER_HEADERS, peer) is ANONYMOUS


def test_gateway_headers_ignored_when_the_gateway_is_off() -> None:
    off = GatewaySettings(enabled=False, trusted_peers=["127.0.0.1/32"])
    auth = Authenticator(settings(gateway=off), "test")
    assert authenticate(auth, CLIENT_HEADERS, "127.0.0.1") is ANONYMOUS


def test_gateway_incomplete_driver_headers_are_anonymous() -> None:
    auth = Authenticator(settings(gateway=GATEWAY), "test")
    assert authenticate(auth, {"X-YaTaxi-Park-Id": "p"}) is ANONYMOUS


def test_gateway_configured_header_names() -> None:
    names = GatewayHeaders(user_id="X-User", db_id="X-Park", uuid="X-Driver")
    gateway = GatewaySettings(enabled=True, trusted_peers=["127.0.0.1"], headers=names)
    auth = Authenticator(settings(gateway=gateway), "test")
    assert authenticate(auth, {"x-user": "u"}).subject == ClientSubject(user_id="u")
    assert authenticate(auth, {"X-Park": "p", "X-Driver": "d"}).subject == DriverSubject("p", "d")
    assert authenticate(auth, CLIENT_HEADERS) is ANONYMOUS


def test_a_token_wins_over_gateway_headers() -> None:
    auth = Authenticator(settings(gateway=GATEWAY), "test")
    headers = CLIENT_HEADERS | bearer(token({"kind": "driver", "db_id": "p", "uuid": "d"}))
    assert authenticate(auth, headers).subject == DriverSubject("p", "d")
    with pytest.raises(ApiError):
        authenticate(auth, CLIENT_HEADERS | bearer("bad"))


CLIENT = Caller("client", ClientSubject(user_id="u"), "client:u")
DRIVER = Caller("driver", DriverSubject("p", "d"), "driver:p:d")


@pytest.mark.parametrize(
    ("caller", "tag_type", "expected"),
    [
        (CLIENT, "client", None),
        (DRIVER, "driver", None),
        (ANONYMOUS, "anonymous", None),
        (CLIENT, "anonymous", None),
        (DRIVER, "anonymous", None),
        (CLIENT, "driver", (403, "wrong_event_type")),
        (DRIVER, "client", (403, "wrong_event_type")),
        (ANONYMOUS, "client", (401, "unauthenticated")),
        (ANONYMOUS, "driver", (401, "unauthenticated")),
    ],
)
def test_check_caller(caller: Caller, tag_type: Any, expected: tuple[int, str] | None) -> None:
    refusal = check_caller(caller, tag_type, "some-tag")
    assert (None if refusal is None else (refusal.status, refusal.code)) == expected
    if refusal is not None:
        assert "some-tag" in refusal.message


def test_anonymous_subject_is_empty() -> None:
    assert ANONYMOUS == Caller("anonymous", AnonymousSubject(), "anonymous")


# -- claims out of range (issue 12) ------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_huge_time_claim_is_an_invalid_token_not_a_crash(claim: str) -> None:
    # Signed with the right key: only the number is wrong (10**400 overflows a float).
    body = claims(kind="client", sub="u") | {claim: 10**400}
    tok = forged_hs256(body, JWT_SECRET.encode())
    assert_invalid_token(HS, tok)


@pytest.mark.parametrize("value", ["u\u0085", "u\u009b[31m", "a\u202eb", "x\u2028y", "\x7f"])
def test_ids_with_unsafe_characters_are_refused_even_when_signed(value: str) -> None:
    assert_invalid_token(HS, token({"kind": "client", "sub": value}), "'sub'")
    caller = authenticate(HS, bearer(token({"kind": "client", "sub": "u", "phone_id": value})))
    assert caller.subject == ClientSubject(user_id="u", phone_id=None)
