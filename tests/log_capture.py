"""Every log line a test's code writes, as the service writes it: JSON, one object a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from service.logs import JsonFormatter


class CapturedLogs:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def text(self) -> str:
        return self._stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Each line parsed: a line that is not one JSON object fails the test."""
        parsed = []
        for line in self.text.splitlines():
            value = json.loads(line)
            assert isinstance(value, dict), line
            parsed.append(value)
        return parsed

    def where(self, **fields: Any) -> list[dict[str, Any]]:
        return [x for x in self.lines() if all(x.get(k) == v for k, v in fields.items())]


@contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[CapturedLogs]:
    """The root logger's output, formatted when written (so the request's context is in
    it) by the production formatter, at `level` for the duration."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield CapturedLogs(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
