"""JSON Schemas of the Kafka message values, generated from the msgspec Structs.

docs/kafka/<event type>.schema.json are never edited by hand: after changing an event in
service/seen/seen_wire.py, run `python -m service.seen.kafka_schema`.
tests/unit/test_kafka_schema.py fails while the committed files differ from what this
module generates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from service.config.base import ROOT, EventType
from service.seen.seen_wire import AnonymousSeenEvent, ClientSeenEvent, DriverSeenEvent

SCHEMA_DIR = ROOT / "docs" / "kafka"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

EVENTS: dict[EventType, type[msgspec.Struct]] = {
    "client": ClientSeenEvent,
    "driver": DriverSeenEvent,
    "anonymous": AnonymousSeenEvent,
}


def schema_document(event_type: EventType) -> bytes:
    schema = {"$schema": DIALECT} | msgspec.json.schema(EVENTS[event_type])
    return msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"


def documents() -> dict[str, bytes]:
    """File name (in SCHEMA_DIR) -> content, for every event type."""
    return {f"{t}.schema.json": schema_document(t) for t in EVENTS}


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """The schema files that are missing or differ from the generated ones."""
    return [
        name
        for name, content in documents().items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"stale: {SCHEMA_DIR / name}", file=sys.stderr)
        return 1 if names else 0
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in documents().items():
        (SCHEMA_DIR / name).write_bytes(content)
        print(SCHEMA_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
