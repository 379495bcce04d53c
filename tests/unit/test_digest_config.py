"""Digest-mode event types: their policy is checked at start-up, their templates render a
digest, and producers are asked for the grouping fields and what the templates read off
`last`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.config.base import ROOT, ConfigError
from service.config.load import load_config, parse_config
from service.config.notify import DigestPolicy
from service.notify.catalog import catalog_params
from service.notify.templates import load_templates, load_type
from tests.support import config_data

POLICY = {
    "key": "comment_id",
    "actor": "actor",
    "window": "sliding",
    "quiet": 300,
    "max_wait": 3600,
}


def likes(**changes: Any) -> dict[str, Any]:
    """A test config whose comment_likes type is changed by `changes` (None: removed)."""
    data = config_data("postgresql://unused")
    settings = data["event_types"]["comment_likes"]
    for key, value in changes.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    return data


def digest(**changes: Any) -> dict[str, Any]:
    policy = {k: v for k, v in (POLICY | changes).items() if v is not None}
    return likes(digest=policy)


def write(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "en.toml").write_text(text)


def test_the_example_sends_comment_likes_as_a_sliding_digest() -> None:
    config = load_config(ROOT / "config" / "example.toml", environ={})
    settings = config.event_types["comment_likes"]
    assert settings.mode == "digest"
    assert settings.digest == DigestPolicy(
        key="comment_id",
        actor="actor",
        window="sliding",
        quiet=timedelta(minutes=5),
        max_wait=timedelta(hours=1),
        max_items=50,
        show_actors=2,
    )
    # What the database is told: the policy in seconds, the producers' fields.
    params = catalog_params(config, load_templates(config))
    assert '"mode":"digest","digest_key":"comment_id"' in params["event_types"]
    assert '"digest_quiet_s":300.0,"digest_max_wait_s":3600.0' in params["event_types"]
    assert '"required_data":["actor","comment_id","comment_url"]' in params["event_types"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (likes(digest=None), 'digest: required by mode = "digest"'),
        (likes(mode=None), 'digest: only a type of mode = "digest" has one'),
        (digest(quiet=None), "quiet: required by window = 'sliding'"),
        (digest(every=60), "every: not a setting of window = 'sliding'"),
        (digest(window="fixed", quiet=None, max_wait=None), "every: required by window"),
        (digest(window="daily", quiet=None, max_wait=None), "at: required by window = 'daily'"),
        (digest(window="daily", quiet=None, max_wait=None, at="9:00"), "digest.at"),
        (digest(window="weekly"), "digest.window"),
        (digest(quiet=7200), "quiet: longer than max_wait"),
        (digest(quiet=-1), "quiet: must be positive"),
        (digest(max_items=0), "digest.max_items"),
        (digest(show_actors=0), "digest.show_actors"),
        (digest(actor="comment_id"), "actor: the same field as key"),
        (likes(optional_data=["comment_id"]), "'comment_id' groups the digest"),
    ],
)
def test_a_wrong_policy_stops_start_up_naming_the_type(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="comment_likes") as raised:
        parse_config(data, "test.toml")
    assert message in str(raised.value)


def test_each_window_takes_its_own_settings() -> None:
    for window, settings in (
        ("fixed", {"every": "PT24H"}),
        ("daily", {"at": "09:00"}),
        ("sliding", {"quiet": "PT5M", "max_wait": "PT1H"}),
    ):
        data = likes(digest={"key": "comment_id", "window": window} | settings)
        policy = parse_config(data, "test.toml").event_types["comment_likes"].digest
        assert policy is not None and policy.window == window and policy.show_actors == 3


def test_a_digest_renders_names_and_counts_and_needs_what_it_reads_off_last() -> None:
    templates = load_templates(parse_config(likes(), "test.toml"))["comment_likes"]
    # The grouping fields, and comment_url because the templates read last.comment_url.
    assert templates.required_data == {"comment_id", "actor", "comment_url"}
    digest_data = {"digest_key": "c-1", "last": {"comment_url": "https://x/c/1"}, "total": 30}
    for first, others, title in (
        (["Anna"], 0, "Anna liked your comment"),
        (["Anna", "Ben"], 0, "Anna and Ben liked your comment"),
        (["Anna", "Ben"], 1, "Anna, Ben and 1 other liked your comment"),
        (["Anna", "Ben"], 28, "Anna, Ben and 28 others liked your comment"),
    ):
        context = digest_data | {"first_actors": first, "others": others, "last_actors": []}
        push = templates.render("push", "en", context)
        assert push["title"] == title
        assert push["data"] == {"comment_id": "c-1", "url": "https://x/c/1", "likes": "30"}
        assert templates.render("inbox", "en", context)["link"] == "https://x/c/1"


def test_digest_templates_see_the_digest_not_the_event(tmp_path: Path) -> None:
    config = parse_config(likes(channels=["push"]), "test.toml")
    write(tmp_path / "comment_likes", '[push]\ntitle = "{{ actor }} liked it"\nbody = "b"\n')
    with pytest.raises(ConfigError, match=r"uses actor, but a digest's templates see actor_count"):
        load_type(config, "comment_likes", tmp_path)

    # Fields read off `last` by name are required, unless optional.
    write(
        tmp_path / "comment_likes",
        '[push]\ntitle = "{{ total }} on {{ last.title }}"\n'
        "body = \"{{ last['url'] }}{{ last.note if last.note is defined }}\"\n",
    )
    found = load_type(config, "comment_likes", tmp_path).required_data
    assert found == {"comment_id", "actor", "title", "url", "note"}
    optional = parse_config(likes(channels=["push"], optional_data=["note"]), "test.toml")
    found = load_type(optional, "comment_likes", tmp_path).required_data
    assert found == {"comment_id", "actor", "title", "url"}


def test_an_instant_type_may_still_have_a_variable_called_last(tmp_path: Path) -> None:
    data = likes(mode=None, digest=None, channels=["push"])
    write(tmp_path / "comment_likes", '[push]\ntitle = "{{ last.name }}"\nbody = "b"\n')
    found = load_type(parse_config(data, "test.toml"), "comment_likes", tmp_path).required_data
    assert found == {"last"}
