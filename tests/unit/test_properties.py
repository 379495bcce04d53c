"""Properties that hold for every input, checked with Hypothesis: the retry schedule, the
config parser, digest windows, template rendering and the identifier rule."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from dispatcher.retry import backoff_bound, parse_retry_after, retry_delay
from service.config.base import Backoff, ConfigError
from service.config.load import Config, parse_config
from service.config.notify import DigestPolicy
from service.notify.templates import load_templates
from service.text_rules import SAFE_PATTERN, is_safe
from tests.support import config_data

EPISODE = {"series": "Dark", "episode": 3, "title": "Past and Present", "url": "https://x/e3"}

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- the retry schedule --------------------------------------------------------------------

seconds = st.floats(min_value=0.001, max_value=3600, allow_nan=False)
backoffs = st.builds(
    lambda initial, factor, cap: Backoff(
        initial=timedelta(seconds=initial),
        factor=factor,
        cap=timedelta(seconds=max(initial, cap)),
    ),
    seconds,
    st.floats(min_value=1.0, max_value=10.0, allow_nan=False),
    seconds,
)
attempts = st.integers(min_value=1, max_value=10_000)


@PROPERTY_SETTINGS
@given(backoffs, attempts, st.randoms(use_true_random=False))
def test_a_retry_waits_no_longer_than_its_bound_and_the_cap(
    backoff: Backoff, attempt: int, rng: Any
) -> None:
    bound = backoff_bound(backoff, attempt)
    assert 0 < bound <= backoff.cap.total_seconds()
    delay = retry_delay(backoff, attempt, rng=rng)
    # Equal jitter: never sooner than half the bound.
    assert bound / 2 <= delay <= bound


@PROPERTY_SETTINGS
@given(backoffs, attempts)
def test_bounds_never_shrink_from_one_attempt_to_the_next(backoff: Backoff, attempt: int) -> None:
    assert backoff_bound(backoff, attempt) <= backoff_bound(backoff, attempt + 1)
    # The first retry waits at most the initial delay (capped).
    assert backoff_bound(backoff, 1) == min(
        backoff.initial.total_seconds(), backoff.cap.total_seconds()
    )


@PROPERTY_SETTINGS
@given(backoffs, attempts, st.floats(min_value=0.001, max_value=1e9), st.randoms())
def test_retry_after_is_a_floor_but_never_past_the_cap(
    backoff: Backoff, attempt: int, retry_after: float, rng: Any
) -> None:
    delay = retry_delay(backoff, attempt, retry_after, rng=rng)
    cap = backoff.cap.total_seconds()
    assert min(retry_after, cap) <= delay <= cap


@PROPERTY_SETTINGS
@given(st.text(max_size=60))
def test_any_retry_after_header_is_a_number_of_seconds_or_none(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0


# -- the config parser ---------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
SECTIONS = (
    "environment",
    "database",
    "api",
    "identity",
    "consumers",
    "tags",
    "dispatcher",
    "notify",
    "channels",
    "categories",
    "event_types",
    "schedules",
    "scheduler",
    "retention",
)


def _parse(data: dict[str, Any]) -> Config | None:
    try:
        return parse_config(data, "fuzzed")
    except ConfigError:
        return None


@PROPERTY_SETTINGS
@given(st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), toml_values))
def test_arbitrary_config_data_is_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    _parse(data)


@PROPERTY_SETTINGS
@given(st.data())
def test_a_valid_config_with_one_value_replaced_is_a_config_or_a_config_error(
    data: st.DataObject,
) -> None:
    # A deep copy: config_data shares some tables (tests.support.FAST_RETRY) between calls.
    config = copy.deepcopy(config_data("postgresql://localhost/x"))
    # Walk down to some table of the valid config and replace or add one entry.
    table: dict[str, Any] = config
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        tables = [k for k, v in table.items() if isinstance(v, dict)]
        if not tables:
            break
        table = table[data.draw(st.sampled_from(sorted(tables)))]
    key = data.draw(st.sampled_from(sorted(table)) | st.text(max_size=10)) if table else "x"
    table[key] = data.draw(toml_values)
    _parse(config)


# -- digest windows ------------------------------------------------------------------------

durations = st.one_of(
    st.integers(min_value=-10, max_value=10**6),
    st.sampled_from(["PT5M", "PT1H", "P1D", "PT0S", "-PT1M", "nonsense"]),
)


@PROPERTY_SETTINGS
@given(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["comment_id", "", "k" * 100])},
        optional={
            "window": st.sampled_from(["fixed", "daily", "sliding", "hourly"]),
            "every": durations,
            "at": st.sampled_from(["09:00", "24:00", "9", ""]),
            "quiet": durations,
            "max_wait": durations,
            "max_items": st.integers(min_value=-5, max_value=10_000),
            "actor": st.sampled_from(["actor", ""]),
        },
    )
)
def test_a_digest_policy_is_coherent_or_refused(raw: dict[str, Any]) -> None:
    try:
        policy = msgspec.convert(raw, DigestPolicy, strict=False)
    except msgspec.ValidationError:
        return
    # Each window takes its own settings only, and a sliding window can close.
    if policy.window == "sliding":
        assert policy.quiet is not None and policy.max_wait is not None
        assert timedelta(0) < policy.quiet <= policy.max_wait
    if policy.window == "fixed":
        assert policy.every is not None and policy.every > timedelta(0)
        assert policy.quiet is None and policy.max_wait is None
    if policy.window == "daily":
        assert policy.at is not None and policy.every is None


# -- template rendering --------------------------------------------------------------------

TEMPLATES = load_templates(parse_config(config_data("postgresql://localhost/x"), "test"))
ATTACKS = st.sampled_from(
    [
        "{{ 7*7 }}",
        "{% for x in range(10**9) %}{% endfor %}",
        "{{ ''.__class__.__mro__ }}",
        "<script>alert(1)</script>",
        "'); DROP TABLE outbox;--",
        "{{ recipient }}",
        "&amp; \" ' < >",
    ]
)
texts = st.text(max_size=40) | ATTACKS


@PROPERTY_SETTINGS
@given(texts, texts)
def test_event_data_is_rendered_as_text_never_evaluated(title: str, series: str) -> None:
    data = EPISODE | {"title": title, "series": series}
    context = data | {
        "recipient": {"id": "u-1", "locale": "en"},
        "unsubscribe_url": "https://x/u",
        "preferences_url": "https://x/p",
        "notification_id": "n",
        "event_id": "e",
    }
    inbox = TEMPLATES["new_episode"].render("inbox", "en", context)
    assert inbox["title"] == f"New episode of {series}"
    assert f'"{title}"' in inbox["body"]
    email = TEMPLATES["new_episode"].render("email", "en", context)
    assert f"of {series}: {title}" in email["subject"]
    # HTML parts escape what they substitute: no tag of the data survives as markup.
    assert f"<b>{escape(series)}</b>" in email["html"]
    assert f"&ldquo;{escape(title)}&rdquo;" in email["html"]


# -- identifiers ---------------------------------------------------------------------------

UNSAFE = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + [
    "\u2028",
    "\u2029",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
]


@PROPERTY_SETTINGS
@given(st.text(max_size=30), st.sampled_from(UNSAFE), st.text(max_size=30))
def test_an_unsafe_character_anywhere_is_refused(before: str, bad: str, after: str) -> None:
    value = before + bad + after
    assert not is_safe(value, 1000)
    assert re.search(SAFE_PATTERN, value) is None


@PROPERTY_SETTINGS
@given(st.text(min_size=1, max_size=60))
def test_the_published_pattern_and_the_function_agree(value: str) -> None:
    assert is_safe(value, 1000) == (re.search(SAFE_PATTERN, value) is not None)


@pytest.mark.parametrize("value", ["série-1", "用户", "a b", "x/y", "\u200fhebrew"])
def test_printable_text_of_any_script_is_allowed(value: str) -> None:
    assert is_safe(value, 100)
