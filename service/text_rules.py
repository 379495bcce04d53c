"""Which text may be an identifier: one rule for every id, key, tag, topic, token and name
the service stores and shows again (seen ids, Idempotency-Key, user ids, topics, event
idempotency keys, device tokens, identity claims, the admin's mailing and schedule names).

Refused anywhere in an identifier:

- C0 controls, DEL and C1 controls (U+0000-U+001F, U+007F-U+009F): NUL is refused by
  PostgreSQL's text, the others end up in log lines, headers, Kafka keys and the admin
  panel, where a line break starts a forged log line and ESC / CSI (U+009B) drives a
  terminal.
- The line and paragraph separators U+2028 and U+2029: line breaks to JavaScript and to
  many log viewers.
- Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they
  make an id display as another one (the "Trojan Source" trick) in the admin panel and in
  logs. The marks U+200E/U+200F stay allowed: they do not reorder text around them.

Lone surrogates cannot occur: msgspec refuses them in JSON, and URL paths and headers are
decoded without producing any. Free text (event data, templates' output, mailing texts)
is not an identifier and keeps its own rules.

`SAFE_PATTERN` is both a Python and an ECMA-262 regular expression, so it is what msgspec
checks and what the OpenAPI document publishes; `$(?!\\n)` is the true end of the text
(Python's `$` also matches before a final newline, and `\\Z` is not ECMA).
"""

from __future__ import annotations

import re

_UNSAFE = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
SAFE_PATTERN = rf"^[^{_UNSAFE}]+$(?!\n)"
# The same without `/`, for ids that are a path segment (/v1/users/{id}).
SAFE_SEGMENT_PATTERN = rf"^[^{_UNSAFE}/]+$(?!\n)"
# What an HTTP header may carry as a key: visible ASCII and spaces. Header bytes are read
# as latin-1, so anything else would be mojibake of UTF-8, or C1 controls.
HEADER_VALUE_PATTERN = r"^[\x20-\x7e]+$(?!\n)"

_UNSAFE_CHAR = re.compile(f"[{_UNSAFE}]")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")


def is_safe(value: str, max_length: int, *, segment: bool = False) -> bool:
    """Whether `value` is 1 to max_length characters with none refused (and, for a path
    `segment`, no `/`)."""
    if not 0 < len(value) <= max_length or _UNSAFE_CHAR.search(value) is not None:
        return False
    return not (segment and "/" in value)


def unsafe_at(value: str) -> int | None:
    """The index of the first refused character in `value`, or None."""
    found = _UNSAFE_CHAR.search(value)
    return found.start() if found else None


def is_header_value(value: str, max_length: int) -> bool:
    """Whether a header value is 1 to max_length visible ASCII characters (or spaces)."""
    return 0 < len(value) <= max_length and _HEADER_VALUE.fullmatch(value) is not None
