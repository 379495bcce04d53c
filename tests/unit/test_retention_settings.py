"""[retention]: ages and batch size, checked when the config is read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from service.config.base import ROOT, ConfigError
from service.config.load import load_config, parse_config
from service.config.schedule import RetentionSettings


def test_the_example_config_states_the_defaults() -> None:
    config = load_config(ROOT / "config" / "example.toml", environ={})
    assert config.retention == RetentionSettings()
    assert config.retention.dead > config.retention.delivered


def test_ages_are_read_as_durations() -> None:
    config = parse_config(
        {"retention": {"delivered": "P2D", "dead": 86400 * 60, "batch_size": 100}}, "x.toml"
    )
    assert config.retention.delivered == timedelta(days=2)
    assert config.retention.dead == timedelta(days=60)
    assert config.retention.batch_size == 100


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"delivered": 0}, "retention.delivered: must be positive"),
        ({"inbox": "-P1D"}, "retention.inbox: must be positive"),
        ({"dead": 0}, "retention.dead: must be positive"),
        ({"attempts": 0}, "retention.attempts: must be positive"),
        ({"digest_items": 0}, "retention.digest_items: must be positive"),
        ({"pause": -1}, "retention.pause: must not be negative"),
        ({"batch_size": 0}, "$.retention.batch_size"),
        ({"keep": "P1D"}, "unknown field `keep`"),
    ],
)
def test_a_wrong_value_stops_the_config_naming_the_key(
    section: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"retention": section}, "x.toml")
    assert expected in str(exc.value)
