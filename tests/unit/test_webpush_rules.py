"""Web Push's rules without a network: the config's keys and channels, the endpoint and key
checks (service/webpush.py), the Topic header, and bin/vapid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dispatcher.webpush_transport import topic_header
from service import webpush
from service.config.base import ROOT, ConfigError
from service.config.load import load_config, parse_config
from service.config.notify import WebPushSettings
from service.ops import vapid_cli
from tests.support import VAPID_PRIVATE_KEY, VAPID_PUBLIC_KEY, config_data

EXAMPLE_PUBLIC_KEY = (
    "BCvSiradn5mGF20vjTfkjQbSk5x_0kbKTsSQrNIdPgVPc1Lu0iyVdKGwaQqHBs5-WgO5x7yNMu7rmOSmTgOaexM"
)


def parsed(**changes: Any) -> None:
    data = config_data("postgresql://127.0.0.1:9/unused")
    data["channels"]["webpush"] = {"kind": "webpush", "transport": "webpush"}
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    parse_config(data, "test-config")


def test_a_webpush_channel_parses_with_its_keys() -> None:
    parsed()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"notify.webpush": None}, "channels.webpush: a webpush channel needs [notify.webpush]"),
        ({"channels.webpush.transport": "provider"}, "a webpush channel uses 'webpush'"),
        ({"notify.webpush.vapid_private_key": "abc"}, "vapid_private_key: a VAPID private key"),
        ({"notify.webpush.vapid_private_key": "REPLACE-ME"}, "still the REPLACE-ME placeholder"),
        (
            {"notify.webpush.vapid_private_key": "dev-NXDX6Z9qHR-4tvCGx5e7sJeVH2yDanuVPYuSOVo"},
            "vapid_private_key: a development secret outside environment=development",
        ),
        ({"notify.webpush.vapid_subject": "ops@example.com"}, "vapid_subject: a mailto:"),
        ({"notify.webpush.endpoint_hosts": ["https://x"]}, "endpoint_hosts: 'https://x'"),
    ],
)
def test_what_the_config_refuses(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parsed(**change)


def test_the_example_config_s_dev_key_is_the_published_public_key() -> None:
    config = load_config(ROOT / "config" / "example.toml", {})
    assert config.notify.webpush is not None
    key = webpush.private_key(config.notify.webpush.vapid_private_key)
    assert webpush.public_key_text(key) == EXAMPLE_PUBLIC_KEY


def test_urgency_is_the_type_s_else_its_priority_s() -> None:
    data = config_data("postgresql://127.0.0.1:9/unused")
    data["event_types"]["new_episode"]["urgency"] = "very-low"
    config = parse_config(data, "test-config")
    assert config.event_types["new_episode"].push_urgency == "very-low"
    assert config.event_types["payment_receipt"].push_urgency == "high"
    assert config.event_types["comment_likes"].push_urgency == "normal"


SETTINGS = WebPushSettings(vapid_private_key=VAPID_PRIVATE_KEY, vapid_subject="mailto:a@b.c")


@pytest.mark.parametrize(
    ("url", "environment", "ok"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "production", True),
        ("https://updates.push.services.mozilla.com/wpush/v2/gAAA", "production", True),
        ("https://web.push.apple.com/QGq", "production", True),
        ("https://wns2-by3p.notify.windows.com/w/?token=x", "production", True),
        ("https://notfcm.googleapis.com/x", "production", False),
        ("https://fcm.googleapis.com.evil.example/x", "production", False),
        ("http://fcm.googleapis.com/x", "production", False),
        ("http://127.0.0.1:8001/webpush/demo", "production", False),
        ("http://127.0.0.1:8001/webpush/demo", "development", True),
        ("http://localhost:8001/push", "test", True),
        ("http://10.0.0.1/push", "development", False),
        ("https://fcm.googleapis.com:99999/x", "production", False),
        ("https://fcm.googleapis.com/x#frag", "production", False),
        ("https://fcm.googleapis.com/x y", "production", False),
    ],
)
def test_where_an_endpoint_may_be(url: str, environment: str, ok: bool) -> None:
    if ok:
        webpush.check_endpoint(url, SETTINGS, environment)
    else:
        with pytest.raises(ValueError, match="endpoint"):
            webpush.check_endpoint(url, SETTINGS, environment)


def test_the_topic_header_is_short_base64url_and_stable() -> None:
    header = topic_header("series-Dark" * 20)
    assert len(header) == 32 and webpush.b64url_decode(header)
    assert header == topic_header("series-Dark" * 20) != topic_header("series-Lost")


def test_bin_vapid_makes_a_key_pair_and_shows_the_configured_public_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert vapid_cli.main(["new"]) == 0
    line, comment = capsys.readouterr().out.splitlines()
    name, private = line.split("=", 1)
    assert name == "MARK_NOTIFY__notify__webpush__vapid_private_key"
    public = webpush.public_key_text(webpush.private_key(private))
    assert comment == f"# public key (applicationServerKey): {public}"
    config = tmp_path / "c.toml"
    config.write_text(
        f'environment = "test"\n[notify.webpush]\nvapid_private_key = "{VAPID_PRIVATE_KEY}"\n'
        'vapid_subject = "mailto:a@b.c"\n'
    )
    assert vapid_cli.main(["--config", str(config), "public"]) == 0
    assert capsys.readouterr().out == VAPID_PUBLIC_KEY + "\n"
    config.write_text('environment = "test"\n')
    assert vapid_cli.main(["--config", str(config), "public"]) == 2
    assert "no [notify.webpush]" in capsys.readouterr().err
