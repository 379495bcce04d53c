"""A mailing's form: what the manager typed and uploaded, checked, as a Draft to store.

Two kinds of content: a configured event type (its templates, the data fields they read),
or a one-off message, which is the built-in `announcement` type whose templates only
substitute the texts this form collects per locale (config/templates/announcement/). The
audience is everyone, a topic's members, or the user ids of an uploaded CSV file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from starlette.datastructures import FormData, UploadFile

from service.config.load import Config
from service.state import EventTemplates
from service.text_rules import is_safe

ONE_OFF = "announcement"
# The parts of a one-off message per locale: (form name, label, longest).
TEXT_PARTS: tuple[tuple[str, str, int], ...] = (
    ("email_subject", "Email subject", 200),
    ("email_body", "Email text", 20_000),
    ("push_title", "Push title", 100),
    ("push_body", "Push text", 500),
    ("inbox_title", "Inbox title", 200),
    ("inbox_body", "Inbox text", 2_000),
)
# Titles and subjects are one line: a line break in a mail header would start another.
ONE_LINE = frozenset({"email_subject", "push_title", "inbox_title"})
MAX_NAME = 200
MAX_VALUE = 20_000
MAX_TOPIC = 256
MAX_USER_ID = 128
# How many bad lines of an upload are named; the rest are counted.
SHOWN_PROBLEMS = 10
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Audience = Literal["all", "topic", "users"]


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """A mailing as stored (the mailings table's editable columns)."""

    name: str
    event_type: str
    # One-off: {locale: {part: text}}; a configured type: None.
    content: dict[str, dict[str, str]] | None
    data: dict[str, Any]
    audience: Audience
    topic: str | None = None
    user_ids: list[str] | None = None
    send_at: datetime | None = None

    def recipients(self) -> dict[str, Any]:
        """The recipients of its event, as POST /v1/events takes them."""
        if self.audience == "all":
            return {"all": True}
        if self.audience == "topic":
            return {"topic": self.topic}
        return {"user_ids": list(self.user_ids or [])}

    def event_data(self) -> dict[str, Any]:
        """Its event's data: the one-off texts go in as data, never as templates."""
        if self.content is None:
            return dict(self.data)
        return {**self.data, "texts": self.content}


class FormError(Exception):
    """What is wrong with the form, one message per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def eligible_types(config: Config) -> list[str]:
    """Configured types a manager may mail: not transactional (receipts and confirmations
    are for the services that owe them), not digests (they gather per actor), and not the
    one-off type, which has its own form."""
    names = []
    for name, settings in sorted(config.event_types.items()):
        if name == ONE_OFF or settings.digest is not None:
            continue
        if config.categories[settings.category].transactional:
            continue
        names.append(name)
    return names


def locales_of(templates: EventTemplates | None) -> list[str]:
    """The locales a type has templates in, its default first."""
    locales = getattr(templates, "locales", None)
    default = getattr(templates, "default_locale", "en")
    others = sorted(k for k in (locales or {}) if k != default)
    return [default, *others]


def data_fields(config: Config, templates: EventTemplates | None, type_name: str) -> list[str]:
    """The data a type's templates read: required ones first, then optional ones."""
    required = sorted(templates.required_data) if templates else []
    optional = [f for f in config.event_types[type_name].optional_data if f not in required]
    return required + sorted(optional)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    # Browsers send a textarea's line breaks as CRLF.
    return value.strip().replace("\r\n", "\n") if isinstance(value, str) else ""


def _one_off(
    form: FormData, locales: Sequence[str], problems: list[str]
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    texts: dict[str, dict[str, str]] = {}
    for n, locale in enumerate(locales):
        given = {part: _text(form, f"text.{locale}.{part}") for part, _, _ in TEXT_PARTS}
        if n > 0 and not any(given.values()):
            continue  # another language left out: its readers get the default's texts
        for part, label, longest in TEXT_PARTS:
            value = given[part]
            if not value:
                problems.append(f"{label} ({locale}) is empty.")
            elif len(value) > longest:
                problems.append(f"{label} ({locale}) is longer than {longest} characters.")
            elif part in ONE_LINE and ("\n" in value or "\r" in value):
                problems.append(f"{label} ({locale}) must be one line.")
            elif _CONTROL.search(value):
                problems.append(f"{label} ({locale}) contains control characters.")
        texts[locale] = given
    link = _text(form, "link")
    if link and (not re.fullmatch(r"https?://[^\s\"<>]+", link) or len(link) > 2000):
        problems.append("The link must be an http:// or https:// address.")
    return texts, {"link": link}


def _type_data(
    form: FormData,
    config: Config,
    templates: EventTemplates | None,
    type_name: str,
    problems: list[str],
) -> dict[str, Any]:
    required = templates.required_data if templates else frozenset()
    data: dict[str, Any] = {}
    for field in data_fields(config, templates, type_name):
        value = _text(form, f"data.{field}")
        if not value:
            if field in required:
                problems.append(f"Data field {field} is empty (the {type_name} texts use it).")
            continue
        if len(value) > MAX_VALUE:
            problems.append(f"Data field {field} is longer than {MAX_VALUE} characters.")
        data[field] = value
    return data


def parse_user_ids(raw: bytes, limit: int) -> list[str]:
    """The distinct user ids of an uploaded file, in file order: one per line, or the
    `user_id` column of a CSV file with a header. FormError names the bad lines."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormError(["The file is not UTF-8 text."]) from None
    rows = csv.reader(io.StringIO(text, newline=""))
    column: int | None = None
    ids: dict[str, None] = {}
    bad: list[str] = []
    try:
        for row in rows:
            line = rows.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if column is None:
                lowered = [c.lower() for c in cells]
                if "user_id" in lowered:
                    column = lowered.index("user_id")
                    continue
                if len(cells) > 1:
                    raise FormError(
                        [f"Line {line} has {len(cells)} columns: name the ids' column user_id."]
                    )
                column = 0
            value = cells[column] if column < len(cells) else ""
            if not value:
                bad.append(f"line {line}: no user id")
            elif not is_safe(value, MAX_USER_ID, segment=True):
                bad.append(f"line {line}: {value[:40]!r} is not a user id")
            else:
                ids.setdefault(value, None)
    except csv.Error as exc:
        raise FormError([f"The file is not CSV: {exc}."]) from None
    if bad:
        shown = "; ".join(bad[:SHOWN_PROBLEMS])
        more = f" (and {len(bad) - SHOWN_PROBLEMS} more)" if len(bad) > SHOWN_PROBLEMS else ""
        raise FormError([f"{len(bad)} bad line(s) in the file: {shown}{more}."])
    if not ids:
        raise FormError(["The file has no user ids."])
    if len(ids) > limit:
        raise FormError([f"The file has {len(ids)} distinct user ids; at most {limit}."])
    return list(ids)


def _send_at(form: FormData, problems: list[str]) -> datetime | None:
    raw = _text(form, "send_at")
    if not raw:
        return None
    try:
        # <input type="datetime-local"> has no zone: the form says the time is UTC.
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    except ValueError:
        problems.append("The send time is not a date and time.")
        return None


async def read_draft(
    form: FormData,
    config: Config,
    templates: Mapping[str, EventTemplates],
    kept_user_ids: list[str] | None = None,
) -> Draft:
    """The form as a Draft, or FormError with every problem. `kept_user_ids`: the edited
    mailing's list, kept when no new file is uploaded."""
    problems: list[str] = []
    name = _text(form, "name")
    if not name:
        problems.append("Give the mailing a name.")
    elif not is_safe(name, MAX_NAME):
        problems.append(f"The name must be one line of at most {MAX_NAME} characters.")
    type_name = _text(form, "event_type")
    content: dict[str, dict[str, str]] | None = None
    if type_name == ONE_OFF and ONE_OFF in config.event_types:
        content, data = _one_off(form, locales_of(templates.get(ONE_OFF)), problems)
    elif type_name in eligible_types(config):
        data = _type_data(form, config, templates.get(type_name), type_name, problems)
    else:
        raise FormError([f"{type_name or 'No type'} is not a type that can be mailed."])

    audience = _text(form, "audience")
    topic: str | None = None
    user_ids: list[str] | None = None
    if audience == "topic":
        topic = _text(form, "topic")
        if not topic:
            problems.append("Name the topic whose members get the mailing.")
        elif not is_safe(topic, MAX_TOPIC):
            problems.append("The topic is not a topic name.")
    elif audience == "users":
        upload = form.get("audience_file")
        raw = await upload.read() if isinstance(upload, UploadFile) else b""
        if raw:
            try:
                user_ids = parse_user_ids(raw, config.notify.max_recipients)
            except FormError as exc:
                problems += exc.problems
        elif kept_user_ids:
            user_ids = kept_user_ids
        else:
            problems.append("Upload a file of user ids (one per line, or a user_id column).")
    elif audience != "all":
        problems.append("Choose who gets the mailing.")
    send_at = _send_at(form, problems)
    if problems:
        raise FormError(problems)
    draft = Draft(
        name=name,
        event_type=type_name,
        content=content,
        data=data,
        audience="topic" if audience == "topic" else "users" if audience == "users" else "all",
        topic=topic,
        user_ids=user_ids,
        send_at=send_at,
    )
    size = len(msgspec.json.encode(draft.event_data()))
    limit = config.notify.max_data_bytes
    if size > limit:
        raise FormError([f"The texts are {size} bytes; an event carries at most {limit}."])
    return draft


def form_values(draft: Draft | None, form: FormData | None = None) -> dict[str, Any]:
    """What the form's fields show: the submitted form (to correct it), else the stored
    draft, else empty."""
    if form is not None:
        return {k: v for k, v in form.items() if isinstance(v, str)}
    if draft is None:
        return {"audience": "topic"}
    values: dict[str, Any] = {
        "name": draft.name,
        "audience": draft.audience,
        "topic": draft.topic or "",
        "send_at": draft.send_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        if draft.send_at
        else "",
    }
    for locale, parts in (draft.content or {}).items():
        for part, text in parts.items():
            values[f"text.{locale}.{part}"] = text
    for key, value in draft.data.items():
        values["link" if draft.content is not None and key == "link" else f"data.{key}"] = str(
            value
        )
    return values


def draft_of(row: Mapping[str, Any]) -> Draft:
    """A stored mailing row as a Draft."""
    return Draft(
        name=row["name"],
        event_type=row["event_type"],
        content=row["content"],
        data=row["data"] or {},
        audience=row["audience"],
        topic=row["topic"],
        user_ids=row["user_ids"],
        send_at=row["send_at"],
    )
