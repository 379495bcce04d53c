"""Notification templates: one TOML file per event type and locale, rendered with Jinja2.

    config/templates/<type>/<locale>.toml
        [email]  subject, text, html
        [sms]    text
        [push]   title, body, data (a table of templated strings)
        [inbox]  title, body, link
        [webpush] title, body, link, icon, topic, data (docs/webpush.md: the payload)

Every string is a template for Jinja2's sandboxed environment with StrictUndefined: the
event's `data` keys are its variables, plus the reserved `recipient` (id, locale),
`notification_id`, `event_id` and, in email, `preferences_url` (the user's link to the
preference center) and, unless the category is transactional, `unsubscribe_url`. Every
non-transactional type's email, in every locale, must offer the preference center: its
text and its HTML both use `preferences_url`. HTML is autoescaped. Data
values are only ever substituted, never compiled, so template code sent in an event is
shown as text. Everything is compiled at start-up; a template that does not compile, or a
type whose channels lack their template in the default locale, stops the process with
the file and the reason. The variables each type needs are read off its templates, so
the API refuses an event whose data lacks one before anything is stored.

A digest-mode type's templates render a digest, not an event: their variables are
DIGEST_VARIABLES (total, actor_count, first_actors, last_actors, others, digest_key, and
`last`, the newest item's event data). What producers must send is the policy's key and
actor fields and every field the templates read as `last.<field>` or `last['<field>']`
(less optional_data); any other variable is refused at start-up.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from service.config.base import ROOT, ConfigError
from service.config.load import Config
from service.state import RenderError as RenderError  # the dispatcher's import of it stays

PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body", "data"),
    "inbox": ("title", "body", "link"),
    "webpush": ("title", "body", "link", "icon", "topic", "data"),
}
REQUIRED_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body"),
    "inbox": ("title", "body"),
    "webpush": ("title", "body"),
}
RESERVED = frozenset(
    {"recipient", "notification_id", "event_id", "unsubscribe_url", "preferences_url"}
)
# The email parts that must carry preferences_url, unless the category is transactional.
PREFERENCE_LINK_PARTS = ("text", "html")
# A digest notification's data (sql/digests/functions/flush_digests.sql makes it).
DIGEST_VARIABLES = frozenset(
    {"total", "actor_count", "first_actors", "last_actors", "others", "digest_key", "last"}
)
# How _compile reports a field read off `last` ("last.comment_url"): a name no Jinja
# variable can have.
LAST_FIELD = "last."

_text_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_html_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


Compiled = dict[str, Template | dict[str, Template]]


@dataclass(frozen=True, slots=True)
class TypeTemplates:
    """The compiled templates of one event type, by locale, then channel kind, then part."""

    type_name: str
    default_locale: str
    locales: dict[str, dict[str, Compiled]]
    # Data keys every event of this type must carry.
    required_data: frozenset[str] = field(default_factory=frozenset)

    def pick_locale(self, locale: str | None, kind: str) -> str:
        """The recipient's locale, else its language, else the type's default."""
        if locale:
            for candidate in (locale, locale.split("-")[0]):
                if kind in self.locales.get(candidate, {}):
                    return candidate
        return self.default_locale

    def render(self, kind: str, locale: str | None, context: Mapping[str, Any]) -> dict[str, Any]:
        """The rendered parts of one channel kind: strings, and push `data` as a dict."""
        chosen = self.pick_locale(locale, kind)
        parts = self.locales[chosen][kind]
        try:
            rendered: dict[str, Any] = {}
            for part, template in parts.items():
                if isinstance(template, dict):
                    rendered[part] = {k: t.render(context) for k, t in template.items()}
                else:
                    rendered[part] = template.render(context)
        except TemplateError as exc:
            raise RenderError(f"{self.type_name}/{chosen}.toml [{kind}]: {exc}") from None
        return rendered


def _last_fields(tree: nodes.Template) -> set[str]:
    """The fields read off the variable `last` by a constant name (`last.x`, `last['x']`),
    each as LAST_FIELD + name."""
    fields = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        else:
            continue
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "last" and isinstance(name, str):
            fields.add(LAST_FIELD + name)
    return fields


def _compile(source: Any, where: str, html: bool) -> tuple[Template, set[str]]:
    """The template, and the variables it reads from its context (plus LAST_FIELD names)."""
    if not isinstance(source, str):
        raise ConfigError(f"{where}: a template must be a string")
    env = _html_env if html else _text_env
    try:
        tree = env.parse(source)
        names = set(meta.find_undeclared_variables(tree))
        if "last" in names:
            names |= _last_fields(tree)
        return env.from_string(source), names
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        at = f" (line {line})" if line else ""
        raise ConfigError(f"{where}: does not compile{at}: {exc}") from None


def _load_file(
    path: Path, type_name: str
) -> tuple[dict[str, Compiled], set[str], dict[str, set[str]]]:
    """The compiled tables, the variables they read, and those of each [email] part."""
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{rel}: {exc}") from None
    compiled: dict[str, Compiled] = {}
    names: set[str] = set()
    email: dict[str, set[str]] = {}
    for kind, table in data.items():
        if kind not in PARTS or not isinstance(table, dict):
            raise ConfigError(f"{rel}: [{kind}]: expected one of {', '.join(PARTS)}")
        parts: Compiled = {}
        for part, source in table.items():
            where = f"{rel}: [{kind}].{part}"
            if part not in PARTS[kind]:
                raise ConfigError(f"{where}: unknown part (a {kind} has {', '.join(PARTS[kind])})")
            if part == "data":
                if not isinstance(source, dict):
                    raise ConfigError(f"{where}: {kind} data must be a table of strings")
                sub: dict[str, Template] = {}
                for key, value in source.items():
                    sub[key], used = _compile(value, f"{where}.{key}", html=False)
                    names |= used
                parts[part] = sub
            else:
                parts[part], used = _compile(source, where, html=part == "html")
                names |= used
                if kind == "email":
                    email[part] = used
        missing = [p for p in REQUIRED_PARTS[kind] if p not in parts]
        if missing:
            raise ConfigError(f"{rel}: [{kind}] lacks {', '.join(missing)}")
        compiled[kind] = parts
    return compiled, names, email


def load_type(config: Config, type_name: str, directory: Path | None = None) -> TypeTemplates:
    settings = config.event_types[type_name]
    folder = (directory or templates_dir(config)) / (settings.templates or type_name)
    files = sorted(folder.glob("*.toml"))
    where = f"event_types.{type_name}"
    if not files:
        raise ConfigError(f"{where}: no templates in {folder} (want <locale>.toml files)")
    locales: dict[str, dict[str, Compiled]] = {}
    names: set[str] = set()
    emails: dict[Path, dict[str, set[str]]] = {}
    for path in files:
        locales[path.stem], used, emails[path] = _load_file(path, type_name)
        names |= used
    if settings.default_locale not in locales:
        raise ConfigError(
            f"{where}: no {settings.default_locale}.toml (its default_locale) in {folder}"
        )
    kinds = {config.channels[c].kind for c in settings.channels}
    if settings.escalation is not None:
        kinds.add(config.channels[settings.escalation.channel].kind)
    for kind in sorted(kinds):
        if kind not in locales[settings.default_locale]:
            raise ConfigError(
                f"{folder / settings.default_locale}.toml: no [{kind}] section, but the type "
                f"is sent by {kind}"
            )
    if "unsubscribe_url" in names and config.categories[settings.category].transactional:
        # Transactional mail has no unsubscribe link to give (it cannot be switched off).
        raise ConfigError(
            f"{folder}: uses unsubscribe_url, but category {settings.category!r} is "
            "transactional and cannot be unsubscribed from"
        )
    if not config.categories[settings.category].transactional:
        _require_preference_link(emails)
    fields = {n for n in names if n.startswith(LAST_FIELD)}
    names -= fields
    optional = set(settings.optional_data)
    if settings.digest is None:
        required = names - RESERVED - optional
    else:
        unknown = names - RESERVED - DIGEST_VARIABLES
        if unknown:
            raise ConfigError(
                f"{folder}: uses {', '.join(sorted(unknown))}, but a digest's templates see "
                f"{', '.join(sorted(DIGEST_VARIABLES))} (the newest event's data is "
                "last.<field>)"
            )
        policy = settings.digest
        grouping = {policy.key} | ({policy.actor} if policy.actor else set())
        required = grouping | ({f.removeprefix(LAST_FIELD) for f in fields} - optional)
    return TypeTemplates(type_name, settings.default_locale, locales, frozenset(required))


def _require_preference_link(emails: Mapping[Path, Mapping[str, set[str]]]) -> None:
    """Every [email] of a non-transactional type links to the preference center, in its
    text and in its HTML (a mail client may show either)."""
    for path, parts in emails.items():
        for part in PREFERENCE_LINK_PARTS:
            if parts and "preferences_url" not in parts.get(part, set()):
                rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                raise ConfigError(
                    f"{rel}: [email].{part} does not use preferences_url: every "
                    "non-transactional email links to the preference center "
                    "(docs/notifications.md#the-preference-center)"
                )


def templates_dir(config: Config) -> Path:
    return ROOT / config.notify.templates_dir  # an absolute setting replaces ROOT


def load_templates(config: Config, directory: Path | None = None) -> dict[str, TypeTemplates]:
    """Compile every event type's templates; ConfigError names the file and the reason."""
    return {name: load_type(config, name, directory) for name in sorted(config.event_types)}
