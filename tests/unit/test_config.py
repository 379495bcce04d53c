"""Config: TOML files parsed into msgspec Structs, the environment on top, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.config.base import ROOT, Backoff, ConfigError
from service.config.load import Config, apply_env, load_config, parse_config
from service.config.seen import Consumer, Tag
from tests.support import WEBHOOK_SECRET, config_data

EXAMPLE = ROOT / "config" / "example.toml"

MINIMAL = """
environment = "test"

[consumers.promotions]
transport = "http"
url = "http://127.0.0.1:8001/seen"
secret = "whsec_c2VjcmV0"

[tags.promotions]
consumer = "promotions"
event_type = "client"
remember_for = "P30D"
"""


def write(tmp_path: Path, text: str, name: str = "mark-notify.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, environ={})
    assert isinstance(config, Config)
    assert config.environment == "development"
    assert config.database.url is None
    assert config.database.pool_max == 16
    assert config.api.max_batch == 100
    # Consumer/tag routing.
    assert set(config.tags) == {
        "promotions",
        "personal-goals",
        "cashback-offers",
        "fs-banners",
        "notifications",
    }
    assert config.tags["notifications"].consumer is None
    assert set(config.event_types) == {
        "new_episode",
        "registration_confirmation",
        "payment_receipt",
        "comment_likes",
        "weekly_newsletter",
        "announcement",
    }
    for name, tag in config.tags.items():
        assert isinstance(tag, Tag)
        assert tag.consumer is None or tag.consumer in config.consumers, name
    assert config.tags["promotions"] == Tag(
        consumer="promotions", event_type="client", remember_for=timedelta(days=30)
    )
    assert config.tags["personal-goals"].event_type == "driver"
    assert config.tags["fs-banners"].event_type == "anonymous"
    promotions = config.consumers["promotions"]
    assert isinstance(promotions, Consumer)
    assert promotions.transport == "http"
    assert promotions.timeout == timedelta(seconds=5)
    assert promotions.max_attempts == 12
    assert promotions.backoff == Backoff(
        initial=timedelta(seconds=1), factor=2.0, cap=timedelta(minutes=10)
    )
    cashback = config.consumers["cashback"]
    assert (cashback.transport, cashback.max_age) == ("kafka", timedelta(days=2))
    # Identity settings.
    jwt = config.identity.jwt
    assert jwt is not None
    assert (jwt.algorithms, jwt.audience, jwt.issuer) == (["HS256"], "mark-notify", "auth.example")
    assert config.identity.gateway.enabled is False
    assert config.identity.gateway.trusted_peers == ["127.0.0.1/32"]


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL, "other.toml")
    config = load_config(environ={"MARK_NOTIFY_CONFIG": str(path)})
    assert config.environment == "test"
    assert list(config.tags) == ["promotions"]


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[database]\nurl = "postgresql:///from-file"\n')
    environ = {
        "DATABASE_URL": "postgresql:///from-env",
        "MARK_NOTIFY_ENV": "production",
        "MARK_NOTIFY__database__pool_max": "32",
        "MARK_NOTIFY__database__acquire_timeout": "PT7S",
        "MARK_NOTIFY__api__max_batch": "7",
        "MARK_NOTIFY__consumers__promotions__secret": "whsec_ZnJvbS1lbnY=",
        "MARK_NOTIFY__consumers__promotions__max_attempts": "5",
        "MARK_NOTIFY__consumers__promotions__backoff__factor": "1.5",
        "MARK_NOTIFY__consumers__promotions__enabled": "false",
        "MARK_NOTIFY__tags__promotions__remember_for": "3600",
        "MARK_NOTIFY__identity__jwt__audience": "aud-from-env",
        "MARK_NOTIFY__identity__jwt__issuer": "iss-from-env",
        "MARK_NOTIFY__identity__jwt__algorithms": '["HS256", "RS256"]',
        # A secret made of digits is still a string, not the number 1234567890.
        "MARK_NOTIFY__identity__jwt__secret": "1234567890",
        "MARK_NOTIFY__identity__gateway__enabled": "true",
        "MARK_NOTIFY__identity__gateway__trusted_peers": '["10.0.0.0/8", "::1"]',
        "UNRELATED": "ignored",
    }
    config = load_config(path, environ=environ)
    assert config.database.url == "postgresql:///from-env"
    assert config.environment == "production"
    assert config.database.pool_max == 32
    assert config.database.acquire_timeout == timedelta(seconds=7)
    assert config.api.max_batch == 7
    promotions = config.consumers["promotions"]
    assert promotions.secret == "whsec_ZnJvbS1lbnY="
    assert promotions.max_attempts == 5
    assert promotions.backoff.factor == 1.5
    assert promotions.enabled is False
    assert config.tags["promotions"].remember_for == timedelta(hours=1)
    jwt = config.identity.jwt
    assert jwt is not None
    assert (jwt.audience, jwt.issuer, jwt.algorithms) == (
        "aud-from-env",
        "iss-from-env",
        ["HS256", "RS256"],
    )
    assert jwt.secret == "1234567890"
    assert config.identity.gateway.enabled is True
    assert config.identity.gateway.trusted_peers == ["10.0.0.0/8", "::1"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain text", "plain text"),
        ("12", "12"),
        ("true", "true"),
        ('"quoted"', "quoted"),
        ("[1, 2]", [1, 2]),
        ('{ a = "b" }', {"a": "b"}),
        ("[not toml", "[not toml"),
    ],
)
def test_environment_values(raw: str, expected: Any) -> None:
    assert apply_env({}, {"MARK_NOTIFY__section__key": raw}) == {"section": {"key": expected}}


def test_environment_path_through_a_value_fails() -> None:
    with pytest.raises(ConfigError, match=r"MARK_NOTIFY__api__max_batch__x.*'max_batch'"):
        apply_env({"api": {"max_batch": 5}}, {"MARK_NOTIFY__api__max_batch__x": "1"})


def test_test_config_is_a_struct_tree() -> None:
    config = parse_config(config_data("postgresql:///x"), "test-config")
    assert isinstance(config, msgspec.Struct)
    assert config.tags["personal-goals"].remember_for == timedelta(hours=1)
    assert config.consumers["goals"].secret == WEBHOOK_SECRET
    assert config.database.acquire_timeout == timedelta(seconds=2)


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_config(missing, environ={})


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = MINIMAL + "\n[api]\nmax_batch = = 3\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert f"line {text.count(chr(10))}" in message


NOTIFY = (
    MINIMAL
    + """
[tags.notifications]
event_type = "client"
remember_for = "P365D"

[channels.push]
kind = "push"
transport = "provider"
providers = [{ name = "p1", url = "http://127.0.0.1:8001/p1", secret = "whsec_c2VjcmV0" }]

[channels.sms]
kind = "sms"
transport = "provider"
providers = [{ name = "s1", url = "http://127.0.0.1:8001/s1", secret = "whsec_c2VjcmV0" }]

[categories.content]
defaults = { push = true }

[event_types.new_episode]
category = "content"
channels = ["push"]
escalation = { channel = "sms", after = "PT10M" }
"""
)


def test_a_notification_config_parses() -> None:
    import tomllib

    config = parse_config(tomllib.loads(NOTIFY), "x")
    assert config.channels["push"].providers[0].name == "p1"
    escalation = config.event_types["new_episode"].escalation
    assert escalation is not None and escalation.after == timedelta(minutes=10)


# (text appended to MINIMAL or replacing it, expected fragments: the key and the reason)
BAD_FILES: list[tuple[str, str, list[str]]] = [
    (
        "unknown key",
        MINIMAL + "\n[database]\npool_maxx = 3\n",
        ["unknown field `pool_maxx`", "$.database"],
    ),
    ("wrong type", MINIMAL + "\n[database]\npool_max = 'many'\n", ["`int`", "$.database.pool_max"]),
    ("out of range", MINIMAL + "\n[api]\nmax_batch = 5000\n", ["<= 1000", "$.api.max_batch"]),
    ("bad environment", 'environment = "staging"\n', ["'staging'", "$.environment"]),
    (
        "bad duration",
        MINIMAL.replace('"P30D"', '"soon"'),
        ["ISO8601 duration", "$.tags.promotions.remember_for"],
    ),
    (
        "zero duration",
        MINIMAL.replace('"P30D"', '"PT0S"'),
        ["tags.promotions.remember_for", "must be positive"],
    ),
    (
        "bad event type",
        MINIMAL.replace('"client"', '"robot"'),
        ["'robot'", "$.tags.promotions.event_type"],
    ),
    (
        "unknown consumer",
        MINIMAL.replace('consumer = "promotions"', 'consumer = "nobody"'),
        ["tags.promotions.consumer", "no consumer named 'nobody'"],
    ),
    (
        "tag lacks a field",
        MINIMAL.replace('event_type = "client"\n', ""),
        ["missing required field `event_type`", "$.tags.promotions"],
    ),
    (
        "unknown consumer field",
        MINIMAL.replace('transport = "http"', 'transport = "http"\nretries = 3'),
        ["unknown field `retries`", "$.consumers.promotions"],
    ),
    (
        "bad transport",
        MINIMAL.replace('"http"\n', '"smtp"\n'),
        ["'smtp'", "$.consumers.promotions.transport"],
    ),
    (
        "http consumer without url",
        MINIMAL.replace('url = "http://127.0.0.1:8001/seen"\n', ""),
        ["consumers.promotions.url", "http(s) URL"],
    ),
    (
        "http consumer without secret",
        MINIMAL.replace('secret = "whsec_c2VjcmV0"\n', ""),
        ["consumers.promotions.secret", "signing secret"],
    ),
    (
        "secret not in whsec form",
        MINIMAL.replace("whsec_c2VjcmV0", "hunter2"),
        ["consumers.promotions.secret", "whsec_"],
    ),
    (
        "bad tag name",
        MINIMAL.replace("[tags.promotions]", "[tags.Promotions]"),
        ["tags.'Promotions'", "a name is"],
    ),
    (
        "bad trusted peer",
        MINIMAL + "\n[identity.gateway]\ntrusted_peers = ['localhost']\n",
        ["identity.gateway.trusted_peers", "'localhost'"],
    ),
    (
        "gateway without peers",
        MINIMAL + "\n[identity.gateway]\nenabled = true\n",
        ["identity.gateway.trusted_peers", "required when the gateway is on"],
    ),
    (
        "jwt without issuer",
        MINIMAL + "\n[identity.jwt]\naudience = 'a'\n",
        ["missing required field `issuer`", "$.identity.jwt"],
    ),
    (
        "unsupported algorithm",
        MINIMAL + "\n[identity.jwt]\naudience = 'a'\nissuer = 'i'\nalgorithms = ['none']\n",
        ["'none'", "$.identity.jwt.algorithms"],
    ),
    (
        "channel kind and transport disagree",
        NOTIFY.replace('kind = "push"', 'kind = "email"'),
        ["channels.push.transport", "email channel uses 'smtp'"],
    ),
    (
        "provider channel without providers",
        NOTIFY.replace(
            'providers = [{ name = "p1", url = "http://127.0.0.1:8001/p1", '
            'secret = "whsec_c2VjcmV0" }]',
            "providers = []",
        ),
        ["channels.push.providers", "at least one provider"],
    ),
    (
        "provider secret",
        NOTIFY.replace(
            '"p1", url = "http://127.0.0.1:8001/p1", secret = "whsec_c2VjcmV0"',
            '"p1", url = "http://127.0.0.1:8001/p1", secret = "plain"',
        ),
        ["channels.push.providers[0].secret", "whsec_"],
    ),
    (
        "ordered channel",
        NOTIFY.replace('kind = "push"', 'kind = "push"\nordered = true'),
        ["channels.push.ordered", "only seen consumers"],
    ),
    (
        "unknown category",
        NOTIFY.replace('category = "content"', 'category = "news"'),
        ["event_types.new_episode.category", "no category named 'news'"],
    ),
    (
        "unknown channel in a type",
        NOTIFY.replace('channels = ["push"]', 'channels = ["push", "fax"]'),
        ["event_types.new_episode.channels", "no channel named 'fax'"],
    ),
    (
        "escalation to one of the type's channels",
        NOTIFY.replace('channel = "sms"', 'channel = "push"'),
        ["event_types.new_episode.escalation.channel", "already one of"],
    ),
    (
        "unknown channel in category defaults",
        NOTIFY.replace("defaults = { push = true }", "defaults = { fax = true }"),
        ["categories.content.defaults", "no channel named 'fax'"],
    ),
    (
        "seen tag missing",
        NOTIFY.replace("[tags.notifications]", "[tags.other]"),
        ["notify.seen_tag", "must be a configured tag"],
    ),
    (
        "channel named like a consumer",
        NOTIFY.replace("[channels.sms]", "[channels.promotions]").replace(
            'channel = "sms"', 'channel = "promotions"'
        ),
        ["channels.promotions", "a consumer has the same name"],
    ),
    (
        "bad priority",
        NOTIFY.replace('category = "content"', 'category = "content"\npriority = "urgent"'),
        ["'urgent'", "$.event_types.new_episode.priority"],
    ),
]


@pytest.mark.parametrize(
    ("text", "fragments"), [(t, f) for _, t, f in BAD_FILES], ids=[i for i, _, _ in BAD_FILES]
)
def test_wrong_file_fails_with_file_key_and_reason(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_wrong_environment_value_fails_with_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"MARK_NOTIFY__database__pool_max": "lots"})
    assert "$.database.pool_max" in str(err.value)
    assert str(err.value).startswith(f"{path}: ")


def test_a_kafka_tag_without_any_topic_is_refused_at_start_up() -> None:
    from service.config.base import ConfigError
    from service.config.load import parse_config

    data = {
        "kafka": {"topics": {"client": "seen.client"}},
        "consumers": {"cashback": {"transport": "kafka"}},
        "tags": {"offers": {"consumer": "cashback", "event_type": "driver", "remember_for": 60}},
    }
    with pytest.raises(ConfigError, match="has no topic"):
        parse_config(data, "t.toml")


# Every secret setting, as the environment sets it (service/config/load.py, Config._secrets).
SECRETS = {
    "database.url (DATABASE_URL)": ("DATABASE_URL", "postgresql://app:{}@db:5432/app"),
    "identity.jwt.secret": ("MARK_NOTIFY__identity__jwt__secret", "{}"),
    "notify.unsubscribe_secret": ("MARK_NOTIFY__notify__unsubscribe_secret", "{}"),
    "consumers.promotions.secret": ("MARK_NOTIFY__consumers__promotions__secret", "{}"),
    "channels.email.smtp.password": ("MARK_NOTIFY__channels__email__smtp__password", "{}"),
}
EXAMPLE_WEBHOOK_PLACEHOLDER = "whsec_UkVQTEFDRS1NRS13ZWJob29rLXNlY3JldC0wMDAwMA=="


@pytest.mark.parametrize("setting", sorted(SECRETS))
@pytest.mark.parametrize("environment", ["production", "test"])
def test_a_placeholder_secret_is_refused_outside_development_naming_the_setting(
    environment: str, setting: str
) -> None:
    variable, template = SECRETS[setting]
    environ = {"MARK_NOTIFY_ENV": environment, variable: template.format("REPLACE-ME-secret")}
    with pytest.raises(ConfigError) as err:
        parse_config(apply_env(config_data("postgresql://127.0.0.1/x"), environ), "t.toml")
    assert str(err.value).startswith(f"t.toml: {setting}: still the REPLACE-ME placeholder")
    # Development takes it (only the secret's own format is checked there).
    environ["MARK_NOTIFY_ENV"] = "development"
    if setting.startswith("consumers."):
        environ[variable] = EXAMPLE_WEBHOOK_PLACEHOLDER
    parse_config(apply_env(config_data("postgresql://127.0.0.1/x"), environ), "t.toml")


def test_a_placeholder_anywhere_in_a_secret_is_refused_also_inside_a_webhook_key() -> None:
    data = config_data("postgresql://127.0.0.1/x", environment="production")
    for secret in ("my-REPLACE-ME", "replace-me-please", EXAMPLE_WEBHOOK_PLACEHOLDER):
        data["consumers"]["promotions"]["secret"] = secret
        with pytest.raises(ConfigError, match=r"consumers\.promotions\.secret: still the"):
            parse_config(data, "t.toml")
    for provider in data["channels"]["sms"]["providers"]:
        provider["secret"] = EXAMPLE_WEBHOOK_PLACEHOLDER
    data["consumers"]["promotions"]["secret"] = WEBHOOK_SECRET
    with pytest.raises(ConfigError, match=r"channels\.sms\.providers\[0\]\.secret: still the"):
        parse_config(data, "t.toml")


def test_the_example_development_secrets_are_refused_outside_development() -> None:
    # config/example.toml's JWT and unsubscribe secrets start with "dev-".
    for environment in ("production", "test"):
        with pytest.raises(ConfigError, match=r"identity\.jwt\.secret: a development secret"):
            load_config(EXAMPLE, environ={"MARK_NOTIFY_ENV": environment})
    data = config_data("postgresql://127.0.0.1/x", environment="production")
    data["notify"]["unsubscribe_secret"] = "dev-only-unsubscribe-secret-0123456789"
    with pytest.raises(ConfigError, match=r"notify\.unsubscribe_secret: a development secret"):
        parse_config(data, "t.toml")
    data["environment"] = "development"
    assert parse_config(data, "t.toml").notify.unsubscribe_secret


def test_the_database_mode_comes_from_the_config_or_the_environment_alone(
    tmp_path: Path,
) -> None:
    from service.migrate import database_mode

    missing = {"MARK_NOTIFY_CONFIG": str(tmp_path / "none.toml")}
    assert database_mode(missing) == "single"
    assert database_mode(missing | {"MARK_NOTIFY__database__mode": "citus"}) == "citus"
    with pytest.raises(ConfigError, match="database"):
        database_mode(missing | {"MARK_NOTIFY__database__mode": "sharded"})
    # A config file decides when there is one, the environment still overriding it.
    example = (ROOT / "config" / "example.toml").read_text()
    file = tmp_path / "mark-notify.toml"
    file.write_text(example.replace("[database]\n", '[database]\nmode = "citus"\n', 1))
    assert database_mode({"MARK_NOTIFY_CONFIG": str(file)}) == "citus"
