"""The admin's SVG charts: well-formed, escaped, honest about empty data, and to scale."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from service.admin.charts import Series, nice_ceiling, stacked_bars, time_series

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output, not untrusted XML)


def titles(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}title")]


def title_of(element: ET.Element) -> str | None:
    found = element.find(f"{SVG}title")
    return None if found is None else found.text


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (-3, 1), (0.3, 0.5), (1, 1), (1.01, 2), (7, 10), (12, 20), (50, 50), (51, 100)],
)
def test_axis_tops_are_round_and_never_below_the_largest_value(
    value: float, ceiling: float
) -> None:
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_a_time_series_has_a_titled_point_per_non_zero_value() -> None:
    svg = time_series(
        "Per minute",
        ["10:00", "10:01", "10:02"],
        [Series("marks", [0, 4, 2]), Series("events", [1, 0, 0])],
    )
    root = parse(svg)
    assert root.get("viewBox") == "0 0 600 224" and root.get("class") == "chart"
    assert titles(root) == [
        "Per minute (marks: 6, events: 1)",
        "10:01 · marks: 4",
        "10:02 · marks: 2",
        "10:00 · events: 1",
    ]
    assert {"marks", "events", "10:00", "10:02"} <= set(texts(root))
    # Scaled to the largest value: 4 sits on the axis top (5), 2 below it, 0 on the base.
    assert [t for t in texts(root) if re.fullmatch(r"[\d.]+", t)] == ["0", "2.5", "5"]
    cy = {title_of(c): float(c.get("cy", "0")) for c in root.iter(f"{SVG}circle")}
    top, base = 24.0, 24.0 + 200 - 22 - 6
    assert cy["10:01 · marks: 4"] == pytest.approx(base - (4 / 5) * (base - top), abs=0.1)
    assert cy["10:00 · events: 1"] > cy["10:02 · marks: 2"] > cy["10:01 · marks: 4"]


def test_labels_and_names_are_escaped() -> None:
    evil = '<script>alert("x")</script> & co'
    svg = time_series(evil, [evil], [Series(evil, [3])])
    assert "<script>" not in svg
    root = parse(svg)  # still well-formed XML
    assert titles(root)[0].startswith(evil) and evil in texts(root)
    bars = stacked_bars(evil, [(evil, {evil: 2})], [evil])
    assert "<script>" not in bars
    assert f"{evil} · {evil}: 2" in titles(parse(bars))


def test_empty_data_says_so() -> None:
    for svg in (
        time_series("Nothing", [], [Series("marks", [])]),
        time_series("Nothing", ["10:00"], []),
        stacked_bars("Nothing", [], ["delivered"]),
    ):
        root = parse(svg)
        assert "No data" in texts(root)
        assert not list(root.iter(f"{SVG}circle"))
    flat = parse(time_series("Zeros", ["a", "b"], [Series("marks", [0, 0])]))
    assert "Zeros (marks: 0)" in titles(flat) and not list(flat.iter(f"{SVG}circle"))


def test_stacked_bars_share_one_scale_and_keep_the_key_order() -> None:
    svg = stacked_bars(
        "Deliveries",
        [("email", {"delivered": 6, "dead": 2}), ("push", {"retry": 4, "unknown": 99})],
        ["delivered", "retry", "dead"],
        {"delivered": "#00ff00"},
    )
    root = parse(svg)
    segments = [
        (title_of(r), float(r.get("x", "0")), float(r.get("width", "0")), r.get("fill"))
        for r in root.iter(f"{SVG}rect")
        if title_of(r) is not None
    ]
    assert [s[0] for s in segments] == [
        "email · delivered: 6",
        "email · dead: 2",
        "push · retry: 4",
    ]
    full = 600 - 2
    (_, x1, w1, fill1), (_, x2, w2, _), (_, x3, w3, _) = segments
    assert fill1 == "#00ff00"
    assert x1 == 0 and w1 == pytest.approx(full * 6 / 8, abs=0.1)
    assert x2 == pytest.approx(w1, abs=0.1) and w2 == pytest.approx(full * 2 / 8, abs=0.1)
    assert x3 == 0 and w3 == pytest.approx(full * 4 / 8, abs=0.1)  # half the longest bar
    assert "email · 8" in texts(root) and "push · 4" in texts(root)  # keys not listed: left out


def test_bars_link_to_what_they_count_and_an_empty_chart_says_what_is_true() -> None:
    svg = stacked_bars(
        "Dead letters",
        [("sms", {"failed": 1, "dead": 2})],
        ["failed", "dead"],
        link=lambda n, key: f"/admin/deliveries?row={n}&status={key}",
    )
    hrefs = [a.get("href") for a in parse(svg).iter(f"{SVG}a")]
    assert hrefs == [
        "/admin/deliveries?row=0&status=None",
        "/admin/deliveries?row=0&status=failed",
        "/admin/deliveries?row=0&status=dead",
    ]
    calm = parse(stacked_bars("Dead letters", [], ["dead"], empty="No dead letters"))
    assert "No dead letters" in texts(calm) and "No data" not in texts(calm)
