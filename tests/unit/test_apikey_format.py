"""API keys are told from JWTs by their format alone, before any JWT decoding."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from service.apikeys import generate_key
from service.config.core import IdentitySettings, JwtSettings
from service.errors import ApiError
from service.identity import Authenticator, looks_like_api_key, split_api_key
from tests.support import AUDIENCE, ISSUER, JWT_SECRET, client_token


def test_generated_keys_split_into_their_prefix() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key, prefix in keys:
        assert len(key) == 55 and looks_like_api_key(key)
        assert split_api_key(key) == prefix


@pytest.mark.parametrize(
    "token",
    [
        "mn_",
        "mn_0123abcd_" + "A" * 42,  # one short
        "mn_0123abcd_" + "A" * 44,
        "mn_0123ABCD_" + "A" * 43,  # the prefix is lower-case hex
        "mn_0123abcd-" + "A" * 43,
        "mn_0123abcd_" + "A" * 42 + "=",
        "mn_0123abcd_" + "A" * 42 + "\n",
        "xx_0123abcd_" + "A" * 43,
    ],
)
def test_malformed_keys_have_no_prefix(token: str) -> None:
    assert split_api_key(token) is None


def test_a_key_on_a_user_endpoint_is_refused_as_such() -> None:
    settings = IdentitySettings(
        jwt=JwtSettings(audience=AUDIENCE, issuer=ISSUER, secret=JWT_SECRET)
    )
    auth = Authenticator(settings, "test")
    key, _ = generate_key()
    for token in (key, "mn_garbage"):
        with pytest.raises(ApiError) as err:
            auth.authenticate(Headers({"authorization": f"Bearer {token}"}), None)
        assert (err.value.status, err.value.code) == (403, "client_identity_required")
    # A JWT never looks like a key.
    jwt = client_token("anna")
    assert not looks_like_api_key(jwt)
    assert auth.authenticate(Headers({"authorization": f"Bearer {jwt}"}), None).kind == "client"
