"""The provider contract: docs/providers.md matches the Structs the dispatcher encodes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from service.notify import provider_api
from service.notify.provider_api import PushMessage, SmsMessage


def test_committed_doc_matches_the_generated_schemas() -> None:
    assert not provider_api.stale(), (
        "docs/providers.md is stale: run `python -m service.notify.provider_api --write`"
    )


def test_doc_shows_each_body_schema_as_msgspec_generates_it() -> None:
    text = provider_api.DOCUMENT.read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    schemas = {b["title"]: b for b in blocks if "title" in b}
    _, components = msgspec.json.schema_components((SmsMessage, PushMessage))
    for name in ("SmsMessage", "PushMessage"):
        assert schemas[name]["properties"] == components[name]["properties"]
        assert schemas[name]["required"] == components[name]["required"]
    # The prose around the generated section is kept by --write.
    assert "## The response" in text


def test_a_hand_edit_of_the_generated_section_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "providers.md"
    current = provider_api.DOCUMENT.read_text()
    doc.write_text(current.replace('"minLength": 1', '"minLength": 2', 1))
    assert provider_api.stale(doc)
    doc.write_text(current.replace(provider_api.END, ""))
    assert provider_api.stale(doc)
    doc.write_text(current)
    assert not provider_api.stale(doc)


def test_the_documented_examples_are_valid_bodies() -> None:
    for name, example in provider_api.EXAMPLES.items():
        decoded = msgspec.json.decode(msgspec.json.encode(example), type=type(example))
        assert decoded == example, name


@pytest.mark.parametrize("phone", ["015112345678", "+0151", "+49 151 1234", "+4915112345678\n"])
def test_to_must_be_e164(phone: str) -> None:
    body = msgspec.to_builtins(provider_api.EXAMPLES["SmsMessage"]) | {"to": phone}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.to"):
        msgspec.convert(body, SmsMessage)
