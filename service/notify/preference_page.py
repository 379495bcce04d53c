"""The preference center's pages, in English and Russian: the form and the refusals.

Server-rendered HTML (Jinja2, autoescaped; templates in service/notify/pages/) that needs
no JavaScript: the page has none, and its Content-Security-Policy allows none. Every
response carries the headers of PAGE_HEADERS.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse

from service.config.load import Config
from service.errors import ApiError
from service.notify.notify_wire import Preferences

PAGES = Path(__file__).resolve().parent / "pages"
_ENV = Environment(
    loader=FileSystemLoader(PAGES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSS = (PAGES / "preference_center.css").read_text()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

# No script at all, the one stylesheet inline by its hash, forms only to this origin, and
# no framing (clickjacking). The token is in the URL: no Referer, cache or index keeps it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}

# The words of each language, every one with every key of English's (checked at import).
TEXTS: dict[str, dict[str, str]] = tomllib.loads((PAGES / "texts.toml").read_text())
LANGUAGES = tuple(TEXTS)
for _lang, _words in TEXTS.items():
    if set(_words) != set(TEXTS["en"]):
        raise RuntimeError(f"{PAGES / 'texts.toml'}: [{_lang}] lacks or adds words")


def language(locale: str | None) -> str:
    """The page's language for a user's locale (`ru-RU` is Russian); English otherwise."""
    tag = (locale or "").lower().split("-")[0]
    return tag if tag in LANGUAGES else "en"


def accepted_language(accept_language: str) -> str:
    """The page's language for a visitor who is not known yet: their browser's first."""
    first = accept_language.split(",")[0].split(";")[0].strip()
    return language(first)


@dataclass(frozen=True, slots=True)
class Box:
    field: str
    label: str
    on: bool


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    label: str
    transactional: bool
    boxes: list[Box]


def category_label(config: Config, name: str, locale: str | None, lang: str) -> str:
    category = config.categories[name]
    for key in (locale, lang):
        if key and key in category.labels:
            return category.labels[key]
    return category.description or name


def channel_labels(config: Config, lang: str) -> dict[str, str]:
    """Each channel by its kind's word; by kind and name where two share a kind."""
    kinds = Counter(channel.kind for channel in config.channels.values())
    labels = {}
    for name, channel in config.channels.items():
        # A kind without a word of its own (tests/unit/test_preference_center.py says
        # which) is shown by the channel's name.
        word = TEXTS[lang].get(f"kind.{channel.kind}", name)
        labels[name] = word if kinds[channel.kind] == 1 else f"{word} ({name})"
    return labels


def _page(template: str, lang: str, status: int, **context: Any) -> HTMLResponse:
    text = _ENV.get_template(template).render(lang=lang, css=Markup(_CSS), **context)  # noqa: S704
    return HTMLResponse(text, status, headers=PAGE_HEADERS)


def form_page(
    config: Config,
    shown: Preferences,
    *,
    locale: str | None,
    time_zone: str | None,
    form_token: str,
    saved: bool,
) -> HTMLResponse:
    lang = language(locale)
    texts = TEXTS[lang]
    channels = channel_labels(config, lang)
    rows = [
        Row(
            name,
            category_label(config, name, locale, lang),
            category.transactional,
            [
                Box(f"on/{name}/{ch}", label, shown.categories.get(name, {}).get(ch, True))
                for ch, label in channels.items()
            ],
        )
        for name, category in config.categories.items()
    ]
    quiet = [
        {
            "channel": ch,
            "label": label,
            "start": shown.quiet_hours[ch].start if ch in shown.quiet_hours else "",
            "end": shown.quiet_hours[ch].end if ch in shown.quiet_hours else "",
        }
        for ch, label in channels.items()
    ]
    return _page(
        "preference_center.html",
        lang,
        200,
        title=texts["title"],
        t=texts,
        saved=saved,
        categories=rows,
        quiet=quiet,
        muted=shown.muted,
        time_zone=time_zone or texts["no_time_zone"],
        form_token=form_token,
        has_email=any(c.kind == "email" for c in config.channels.values()),
    )


def problem_page(exc: ApiError, lang: str, *, back: bool) -> HTMLResponse:
    """A refusal as a page, with the status and the code's meaning of its JSON twin."""
    texts = TEXTS[lang]
    heading = texts.get(exc.code, texts["not_saved"])
    message = texts.get(f"{exc.code}.message")
    # The API's own words (English) say what was wrong with a form: they name the field.
    detail = exc.message if message is None else None
    return _page(
        "preference_problem.html",
        lang,
        exc.status,
        title=heading,
        heading=heading,
        message=message or texts["other.message"],
        detail=detail,
        back=texts["back"] if back else None,
    )
