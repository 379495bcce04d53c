"""The audit page's diff: only what changed, old → new."""

from __future__ import annotations

from service.admin.audit_page import SHOWN, changes


def test_only_changed_keys_are_listed_old_to_new() -> None:
    before = {"name": "a", "send_at": None, "same": [1, 2]}
    after = {"name": "b", "send_at": "2026-01-01", "same": [1, 2], "added": {"x": 1}}
    assert changes(before, after) == [
        ("added", "—", '{"x":1}'),
        ("name", "a", "b"),
        ("send_at", "—", "2026-01-01"),
    ]


def test_an_action_without_before_lists_what_it_made() -> None:
    assert changes(None, {"event_id": "e1"}) == [("event_id", "—", "e1")]
    assert changes(None, None) == []


def test_values_that_are_not_objects_are_shown_whole_and_long_ones_cut() -> None:
    assert changes("paused", "running") == [("", "paused", "running")]
    assert changes("same", "same") == []
    [(_, old, new)] = changes({"k": "x" * 500}, {"k": 1})
    assert len(old) == SHOWN and old.endswith("…") and new == "1"
