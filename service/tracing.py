"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` a request
brings, or a new trace started at intake, carried with the outbox row to the consumer.

The service records no spans anywhere; it carries the trace so that one mark can be
followed through the logs of the client, the API, the dispatcher and the consumer: the
API writes the trace id in its request line and stores `00-<trace>-<its span>-<flags>`
with the outbox row, and each delivery attempt sends a child of that (same trace id, a
new span id) as the `traceparent` header (HTTP) or message header (Kafka).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Every trace the service starts is marked sampled: its log lines are its record.
SAMPLED = "01"


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def _span_id() -> str:
    # Not a secret, only unique: the module's PRNG is fast, and re-seeded in a forked child.
    while True:
        bits = random.getrandbits(64)
        if bits:
            return f"{bits:016x}"


def _trace_id() -> str:
    while True:
        bits = random.getrandbits(128)
        if bits:
            return f"{bits:032x}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 lowercase hex, not all zeros
    span_id: str  # 16 lowercase hex, not all zeros: the span this context names
    flags: str = SAMPLED  # 2 lowercase hex

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    @property
    def sampled(self) -> bool:
        """The caller's sampled flag: it records this trace, and asks us to."""
        return _is_hex(self.flags) and int(self.flags, 16) & 1 == 1

    def child(self) -> TraceContext:
        """A new span in the same trace, as an outgoing call carries it."""
        return TraceContext(self.trace_id, _span_id(), self.flags)


def new_trace() -> TraceContext:
    return TraceContext(_trace_id(), _span_id())


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The context a `traceparent` header value names, or None when it is absent or not
    valid per the spec (the caller then starts a new trace, as the spec asks)."""
    if value is None:
        return None
    value = value.strip(" \t")
    if len(value) < 55:
        return None
    version = value[:2]
    if not _is_hex(version) or version == "ff":
        return None
    # Version 00 is exactly 55 characters. A later version may append fields after a dash;
    # its first four are read as version 00's, which the spec says later versions keep.
    if (version == "00" and len(value) != 55) or (len(value) > 55 and value[55] != "-"):
        return None
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_is_hex(trace_id) and _is_hex(span_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, flags)


def intake_trace(header: str | None) -> TraceContext:
    """The API's span for a request: a child of the caller's `traceparent` when it sent a
    valid one, else the root of a new trace."""
    parent = parse_traceparent(header)
    return parent.child() if parent is not None else new_trace()


def attempt_trace(stored: str | None, event_id: str) -> TraceContext:
    """The span of one delivery attempt of an outbox row: a child of the traceparent
    stored with the row. A row without one (written before tracing, or by notify_event()
    from SQL) gets a trace id made of its event id, a UUID: stable across its retries,
    so its attempts can still be followed together."""
    parent = parse_traceparent(stored)
    if parent is not None:
        return parent.child()
    trace_id = event_id.replace("-", "").lower()
    if len(trace_id) != 32 or not _is_hex(trace_id) or trace_id == _ZERO_TRACE:
        trace_id = _trace_id()
    return TraceContext(trace_id, _span_id())
