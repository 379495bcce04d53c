"""Notification templates: compiled at start-up, failing with the file and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.config.base import ConfigError
from service.config.load import Config, parse_config
from service.notify.templates import RenderError, load_templates, load_type
from tests.support import config_data, make_config

EPISODE = {"series": "Dark", "episode": 3, "title": "Past", "url": "https://x/3"}


def config(**event_types: Any) -> Config:
    if not event_types:
        return make_config("postgresql://unused")
    data = config_data("postgresql://unused")
    data["event_types"] = event_types
    return parse_config(data, "test-config")


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_the_shipped_types_compile_and_know_the_data_they_need() -> None:
    templates = load_templates(config())
    assert set(templates) == {
        "new_episode",
        "registration_confirmation",
        "payment_receipt",
        "comment_likes",
        "announcement",
    }
    assert templates["new_episode"].required_data == {"series", "episode", "title", "url"}
    assert templates["registration_confirmation"].required_data == {"name", "confirm_url"}


def test_locale_falls_back_to_the_language_then_the_default() -> None:
    episode = load_templates(config())["new_episode"]
    context = EPISODE | {"unsubscribe_url": "https://u", "preferences_url": "https://p"}
    assert episode.render("push", "ru-RU", context)["title"] == "«Dark»: новая серия"
    assert episode.render("push", "ru", context)["title"] == "«Dark»: новая серия"
    assert episode.render("push", "de-AT", context)["title"] == "Dark: new episode"
    assert episode.render("push", None, context)["data"] == {"url": "https://x/3", "series": "Dark"}


def test_template_code_in_data_is_text_and_html_is_escaped() -> None:
    episode = load_templates(config())["new_episode"]
    hostile = EPISODE | {
        "title": "{{ 7*7 }}<script>x</script>",
        "unsubscribe_url": "https://u",
        "preferences_url": "https://p",
    }
    email = episode.render("email", "en", hostile)
    assert "{{ 7*7 }}" in email["subject"] and "49" not in email["subject"]
    assert "&lt;script&gt;" in email["html"] and "<script>" not in email["html"]
    assert "<script>x</script>" in email["text"]  # plain text is not HTML


def test_a_missing_variable_fails_the_render_not_silently() -> None:
    episode = load_templates(config())["new_episode"]
    with pytest.raises(RenderError, match="url"):
        episode.render("inbox", "en", {"series": "x", "episode": 1, "title": "t"})


def test_a_template_that_does_not_compile_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "new_episode", "en.toml", '[push]\ntitle = "{{ series"\nbody = "b"\n')
    cfg = config(new_episode={"category": "content", "channels": ["push"]})
    with pytest.raises(ConfigError, match=r"new_episode/en.toml: \[push\].title: does not compile"):
        load_type(cfg, "new_episode", tmp_path)


def test_a_type_whose_channel_lacks_its_template_fails(tmp_path: Path) -> None:
    write(tmp_path / "new_episode", "en.toml", '[push]\ntitle = "t"\nbody = "b"\n')
    cfg = config(new_episode={"category": "content", "channels": ["push", "email"]})
    with pytest.raises(ConfigError, match=r"en.toml: no \[email\] section"):
        load_type(cfg, "new_episode", tmp_path)


def test_a_type_without_templates_or_default_locale_fails(tmp_path: Path) -> None:
    cfg = config(new_episode={"category": "content", "channels": ["push"]})
    with pytest.raises(ConfigError, match="no templates in"):
        load_type(cfg, "new_episode", tmp_path)
    write(tmp_path / "new_episode", "ru.toml", '[push]\ntitle = "t"\nbody = "b"\n')
    with pytest.raises(ConfigError, match=r"no en.toml \(its default_locale\)"):
        load_type(cfg, "new_episode", tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[push]\ntitle = "t"\n', r"\[push\] lacks body"),
        ('[push]\ntitle = "t"\nbody = "b"\nsound = "x"\n', r"\[push\].sound: unknown part"),
        ('[fax]\ntext = "t"\n', r"\[fax\]: expected one of"),
        ('[push]\ntitle = "t"\nbody = "b"\ndata = "x"\n', "push data must be a table"),
        ("[push\n", "en.toml"),
    ],
)
def test_malformed_template_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "new_episode", "en.toml", text)
    cfg = config(new_episode={"category": "content", "channels": ["push"]})
    with pytest.raises(ConfigError, match=message):
        load_type(cfg, "new_episode", tmp_path)


def test_optional_data_is_not_required(tmp_path: Path) -> None:
    write(
        tmp_path / "new_episode",
        "en.toml",
        '[push]\ntitle = "{{ series }}"\nbody = "{% if note is defined %}{{ note }}{% endif %}"\n',
    )
    cfg = config(
        new_episode={"category": "content", "channels": ["push"], "optional_data": ["note"]}
    )
    compiled = load_type(cfg, "new_episode", tmp_path)
    assert compiled.required_data == {"series"}
    assert compiled.render("push", "en", {"series": "S"}) == {"title": "S", "body": ""}


def test_a_transactional_type_cannot_offer_an_unsubscribe_link(tmp_path: Path) -> None:
    write(
        tmp_path / "receipt",
        "en.toml",
        '[email]\nsubject = "s"\ntext = "{{ unsubscribe_url }}"\nhtml = "h"\n',
    )
    cfg = config(receipt={"category": "billing", "channels": ["email"]})
    with pytest.raises(ConfigError, match="transactional and cannot be unsubscribed"):
        load_type(cfg, "receipt", tmp_path)


@pytest.mark.parametrize("part", ["text", "html"])
def test_a_non_transactional_email_must_link_to_the_preference_center(
    tmp_path: Path, part: str
) -> None:
    parts = {"subject": "s", "text": "{{ preferences_url }}", "html": "{{ preferences_url }}"}
    parts[part] = "{{ unsubscribe_url }}"
    write(
        tmp_path / "news",
        "en.toml",
        "[email]\n" + "".join(f'{k} = "{v}"\n' for k, v in parts.items()),
    )
    write(tmp_path / "news", "ru.toml", '[push]\ntitle = "t"\nbody = "b"\n')
    cfg = config(news={"category": "content", "channels": ["email"]})
    with pytest.raises(ConfigError, match=rf"news/en.toml: \[email\].{part} does not use pref"):
        load_type(cfg, "news", tmp_path)
    # A locale with no email of its own falls back to the default's, which is checked.
    parts[part] = "{{ preferences_url }}"
    write(
        tmp_path / "news",
        "en.toml",
        "[email]\n" + "".join(f'{k} = "{v}"\n' for k, v in parts.items()),
    )
    assert load_type(cfg, "news", tmp_path).required_data == frozenset()


def test_a_transactional_email_may_link_to_the_preference_center(tmp_path: Path) -> None:
    write(tmp_path / "receipt", "en.toml", '[email]\nsubject = "s"\ntext = "t"\nhtml = "h"\n')
    cfg = config(receipt={"category": "billing", "channels": ["email"]})
    assert load_type(cfg, "receipt", tmp_path).required_data == frozenset()
    write(
        tmp_path / "receipt",
        "en.toml",
        '[email]\nsubject = "s"\ntext = "{{ preferences_url }}"\nhtml = "h"\n',
    )
    compiled = load_type(cfg, "receipt", tmp_path)
    assert compiled.required_data == frozenset()
    rendered = compiled.render("email", "en", {"preferences_url": "https://p"})
    assert rendered["text"] == "https://p"
