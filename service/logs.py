"""Structured logs for the API and the dispatcher: one JSON object per line (ts, level,
logger, message, then the record's fields), or human-readable lines for `bin/dev`.

`configure()` installs the one handler, on the root logger, that every library's records
reach (uvicorn's too). `MARK_NOTIFY_LOG_FORMAT` is `json` (the default) or `text`;
`LOG_LEVEL` the level (INFO).

Nothing secret may reach a log line, whatever a call site passes: a field whose name says
it holds a secret or a contact (token, key, signature, password, email, phone, ...) is
replaced by "[redacted]", at any depth, and the message and every text field are scrubbed
of what looks like a bearer token, JWT, API key, webhook secret or signature, e-mail
address or phone number. Call sites still log ids, never contacts: a push token has no
shape to recognise.

The request's id and trace id (service/tracing.py) are kept in a context variable while
it is served, so every line written on its behalf carries them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
import re
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

import msgspec

# (request id, trace id) of the request being served.
request_context: ContextVar[tuple[str, str] | None] = ContextVar("request_context", default=None)

REDACTED = "[redacted]"
LogFormat = Literal["json", "text"]

# Field names (lower case, "-" as "_") that hold a secret or a contact, or contain one of
# these words.
_SECRET_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "authorization",
    "cookie",
    "credential",
    "api_key",
    "apikey",
    "email",
    "phone",
    "contact",
    "devices",
    "recipient",
)
_SECRET_NAMES = frozenset({"key", "to", "session", "csrf", "address", "sms", "jwt"})
_SECRET_TEXT = re.compile(
    "|".join(
        (
            r"(?i:bearer)\s+[^\s,;\"']+",
            r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # a JWT
            r"mn_[0-9a-f]{8}_[A-Za-z0-9_-]{8,}",  # an API key (service/apikeys.py)
            r"whsec_[A-Za-z0-9+/=]+",  # a Standard Webhooks secret
            r"\bv1,[A-Za-z0-9+/]{16,}={0,2}",  # a Standard Webhooks signature
            # An e-mail address; matched from the start of a word only, which keeps the
            # search linear in the text's length.
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
            r"\+\d[\d ().-]{5,}\d",  # a phone number in international form
        )
    )
)
_secret_name_cache: dict[str, bool] = {}


def is_secret_name(name: str) -> bool:
    known = _secret_name_cache.get(name)
    if known is None:
        lowered = name.lower().replace("-", "_")
        known = lowered in _SECRET_NAMES or any(w in lowered for w in _SECRET_WORDS)
        if len(_secret_name_cache) < 4096:
            _secret_name_cache[name] = known
    return known


def scrub(text: str) -> str:
    """Text with anything shaped like a secret or a contact replaced."""
    # Each pattern above needs one of these: most text (ids, routes, numbers) has none, and
    # skips the regular expression, which is most of a request line's cost otherwise.
    if (
        "@" in text
        or "+" in text
        or "eyJ" in text
        or "_" in text
        or "," in text
        or "earer" in text
        or "EARER" in text
    ):
        return _SECRET_TEXT.sub(REDACTED, text)
    return text


def redact(value: Any) -> Any:
    """A field's value made safe to log: secret-named keys blanked, text scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


# What every LogRecord has: anything else on a record is a field the call site passed.
_PLAIN_RECORD = logging.makeLogRecord({}).__dict__
_RECORD_ATTRS = frozenset(_PLAIN_RECORD) | {"message", "asctime", "taskName"}
# A record's own attributes come first in its __dict__, the call site's fields after them.
_OWN_ATTRS = len(_PLAIN_RECORD)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    context = request_context.get()
    if context is not None:
        fields["request_id"], fields["trace_id"] = context
    for name, value in itertools.islice(record.__dict__.items(), _OWN_ATTRS, None):
        if name not in _RECORD_ATTRS:
            fields[name] = REDACTED if is_secret_name(name) else redact(value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self._service = service
        self._encode = msgspec.json.Encoder(enc_hook=str).encode
        self._second = -1
        self._stamp = ""

    def _ts(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            # One strftime a second: the rest is the milliseconds.
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if self._service is not None:
            line["service"] = self._service
        line.update(record_fields(record))
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = scrub(record.exc_text)
        return self._encode(line).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01.234 INFO logger: message key=value ...`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self._encode = msgspec.json.Encoder(enc_hook=str).encode

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = scrub(record.message)
        text = super().formatMessage(record)
        fields = record_fields(record)
        if fields:
            text += " " + " ".join(
                f"{k}={v}" if isinstance(v, str) and v and " " not in v else f"{k}={self._value(v)}"
                for k, v in fields.items()
            )
        return text

    def _value(self, value: Any) -> str:
        return self._encode(value).decode()

    def formatException(self, ei: Any) -> str:
        return scrub(super().formatException(ei))


def log_format() -> LogFormat:
    return "text" if os.environ.get("MARK_NOTIFY_LOG_FORMAT", "json").lower() == "text" else "json"


def configure(service: str, *, level: str | None = None, fmt: LogFormat | None = None) -> None:
    """Send every logger's records, as one kind of line, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = fmt or log_format()
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
    # uvicorn's own handlers (set up before the app is imported) would print its lines in
    # its format: hand them to the root's.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Every wake-up job would otherwise log two INFO lines.
    logging.getLogger("procrastinate").setLevel(logging.WARNING)


# Request lines: one per HTTP request the API answers.

access_log = logging.getLogger("service.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


# The share of POST /v1/seen 200s that get a request line when the caller did not ask for
# its trace to be recorded (docs/observability.md, Logs: a line costs about a third of the
# endpoint's own CPU). Refusals, and requests whose traceparent is sampled, always do.
SEEN_ACCESS_LOG_RATE = "MARK_NOTIFY_SEEN_ACCESS_LOG_RATE"
DEFAULT_SEEN_ACCESS_LOG_RATE = 0.01


def seen_access_rate() -> float:
    return _rate(os.environ.get(SEEN_ACCESS_LOG_RATE))


@functools.lru_cache(maxsize=8)
def _rate(raw: str | None) -> float:
    try:
        return DEFAULT_SEEN_ACCESS_LOG_RATE if raw is None else min(1.0, max(0.0, float(raw)))
    except ValueError:
        return DEFAULT_SEEN_ACCESS_LOG_RATE


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-Id when it is well-formed (short, no spaces or controls, so
    it cannot forge log lines), else a new one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return f"{random.getrandbits(128):032x}"


def log_request(
    method: str, route: str | None, status: int, started: float, request_id: str, trace_id: str
) -> None:
    """The request line; `started` is its time.perf_counter() on arrival."""
    level = logging.WARNING if status >= 500 else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
    # Built here rather than by access_log.log(), which would look up the caller's source
    # line in the stack on every request: a third of the line's cost, for a known answer.
    record = logging.LogRecord(
        access_log.name,
        level,
        __file__,
        0,
        "%s %s %d %.1f ms",
        (method, route, status, duration_ms),
        None,
        "log_request",
    )
    record.method = method
    record.route = route
    record.status = status
    record.duration_ms = duration_ms
    record.request_id = request_id
    record.trace_id = trace_id
    access_log.handle(record)
