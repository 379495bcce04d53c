"""The Prometheus alert rules (config/prometheus/alerts.yml) and the Grafana dashboard
(config/grafana/dashboards/mark-notify.json) ask for metrics that exist.

Every metric name in every rule's and every panel's PromQL must be exported by the API's
`/metrics` or a dispatcher's, scraped for real after traffic (seen marks accepted and
refused, an event, deliveries that succeed, retry and fail, a breaker that opens), and
every label they match or group by must be one those series carry. With promtool on
PATH (Debian's `prometheus` package) the rules are also loaded and unit-tested
(config/prometheus/alerts.test.yml) and every panel's expression is parsed by it;
without promtool those checks skip and the scrape check still runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.config.base import ROOT
from tests.consumers import (
    Received,
    RecordingConsumer,
    Reply,
    add_marks,
    client,
    dispatch_config,
    http_consumer,
    running,
    wait_until,
)
from tests.notify_api import EPISODE, auth, new_key
from tests.support import bearer, client_token, free_port, serve

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

RULES = ROOT / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "alerts.test.yml"
PROMETHEUS = ROOT / "config" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "mark-notify.json"

# Series Prometheus makes itself for every target, and the labels it adds to every series.
SYNTHETIC = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}  # fmt: skip
# Grafana's variables, as Grafana would expand them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"(?<![\w.:$])[a-zA-Z_:][\w:]*")


# --- Reading PromQL -----------------------------------------------------------------------


@dataclass
class Query:
    """The metric names of one PromQL expression, the labels each selector matches on,
    and the labels it groups by."""

    expr: str
    selectors: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def grafana_expanded(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    # Template variables of the dashboard stand in label values: `=~"$consumer"`.
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def parse_query(expr: str) -> Query:
    query = Query(expr)
    text = STRING.sub('""', expr)  # label values (route templates have braces) out of the way
    for labels in GROUPING.findall(text):
        query.grouping |= {label.strip() for label in labels.split(",") if label.strip()}
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries: 5m, 1h:1m
    for match in re.finditer(r"(?<![\w:])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", text):
        name, matchers = match.group(1), match.group(2)
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
        if name is None:  # {__name__="..."}: not used here, and not checkable this way
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        query.selectors.setdefault(name, set()).update(labels)
    text = re.sub(r"\{[^}]*\}", " ", text)
    for match in IDENTIFIER.finditer(text):
        name = match.group(0)
        followed_by = text[match.end() :].lstrip()[:1]
        if name in KEYWORDS or followed_by == "(":  # a function or an aggregation
            continue
        query.selectors.setdefault(name, set())
    return query


def test_parse_query_finds_metrics_labels_and_grouping() -> None:
    query = parse_query(
        'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route="/v1/{id}", '
        'method=~"P.*"}[5m]))) > 0.25 and on (job) sum(rate(y_total[1h:1m] offset 5m)) '
        '/ ignoring(status) z > bool 1e3 or absent(up{job="a"} == 1) unless w:rate5m'
    )
    assert query.selectors == {
        "x_bucket": {"route", "method"},
        "y_total": set(),
        "z": set(),
        "up": {"job"},
        "w:rate5m": set(),
    }
    assert query.grouping == {"le", "route", "job", "status"}
    assert parse_query(grafana_expanded('max(a{c=~"$consumer"}[$__rate_interval])')).selectors == {
        "a": {"c"}
    }


# --- What the rules and the dashboard ask for ---------------------------------------------


def rule_queries() -> Iterator[tuple[str, str]]:
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", grafana_expanded(target["expr"])
    for variable in dashboard["templating"]["list"]:
        definition = variable.get("definition", "")
        if match := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition):
            # label_values(metric, label): the metric must carry the label.
            yield f"variable {variable['name']}", f"count by ({match[2]}) ({match[1]})"


def test_the_rules_cover_what_ops_asked_for() -> None:
    alerts = {name.removeprefix("alert "): expr for name, expr in rule_queries()}
    wanted = {
        "MarkNotifyApiErrorRatioHigh": "mark_notify_http_requests_total",
        "MarkNotifyOldestPendingAgeHigh": "mark_notify_outbox_oldest_pending_age_seconds",
        "MarkNotifyDeadLettersGrowing": "mark_notify_outbox_dead_letters",
        "MarkNotifyBreakerOpen": "mark_notify_breaker_state",
        "MarkNotifySchedulerFailing": "mark_notify_schedule_runs_total",
    }
    for alert, metric in wanted.items():
        assert metric in parse_query(alerts[alert]).selectors, alert
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# --- A real scrape ----------------------------------------------------------------------


@dataclass
class Exported:
    """Series names a scrape exposes, with the labels seen on each (None: declared, with
    no series yet, so its labels are unknown)."""

    labels: dict[str, set[str] | None] = field(default_factory=dict)

    def add(self, text: str) -> None:
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created", ""),
        }
        for family in text_string_to_metric_families(text):
            for suffix in suffixes.get(family.type, ("",)):
                self.labels.setdefault(family.name + suffix, None)
            for sample in family.samples:
                known = self.labels.get(sample.name) or set()
                self.labels[sample.name] = known | set(sample.labels)


def check(queries: Iterable[tuple[str, str]], exported: Exported) -> list[str]:
    """What each query asks for that the scrape does not have."""
    problems = []
    for where, expr in queries:
        query = parse_query(expr)
        in_scope: set[str] = set(TARGET_LABELS)
        label_sets_known = True
        for name, matched in query.selectors.items():
            if name in SYNTHETIC:
                labels: set[str] | None = SYNTHETIC[name]
            elif name in exported.labels:
                labels = exported.labels[name]
            else:
                problems.append(f"{where}: no metric {name} in any scrape")
                continue
            if labels is None:
                label_sets_known = False
                continue
            in_scope |= labels
            for label in matched - labels - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label!r}")
        if label_sets_known:
            for label in query.grouping - in_scope:
                problems.append(f"{where}: groups by {label!r}, which no series in it has")
    return problems


def test_check_reports_missing_metrics_and_labels() -> None:
    exported = Exported()
    exported.add(
        "# TYPE a counter\n"
        'a_total{consumer="x"} 1.0\n'
        "# TYPE h histogram\n"
        'h_bucket{le="1.0"} 1.0\nh_bucket{le="+Inf"} 1.0\nh_sum 1.0\nh_count 1.0\n'
        "# TYPE g gauge\n"
    )
    assert exported.labels["a_total"] == {"consumer"}
    assert exported.labels["h_bucket"] == {"le"} and exported.labels["h_count"] == set()
    assert "g" in exported.labels and exported.labels["g"] is None
    fine = [
        ("ok", "sum by (consumer) (rate(a_total[5m])) > 0 and up{job='x'} == 1"),
        ("ok", "histogram_quantile(0.5, sum by (le) (rate(h_bucket[5m])))"),
        ("ok", 'max by (whatever) (g{unknown="y"})'),  # g has no series: labels unknown
    ]
    assert check(fine, exported) == []
    wrong = [
        ("typo", "rate(a_totl[5m])"),
        ("label", 'rate(a_total{outcome="x"}[5m])'),
        ("grouping", "sum by (tag) (rate(a_total[5m]))"),
    ]
    assert check(wrong, exported) == [
        "typo: no metric a_totl in any scrape",
        "label: a_total has no label 'outcome'",
        "grouping: groups by 'tag', which no series in it has",
    ]


async def _event_accepted(api: str, http: httpx.AsyncClient, key: dict[str, str]) -> bool:
    event = {
        "type": "new_episode",
        "idempotency_key": "alert-rules-1",
        "recipients": {"users": [{"id": "zed", "email": "zed@example.com"}]},
        "data": EPISODE,
    }
    response = await http.post(f"{api}/v1/events", json=event, headers=key)
    # 503 until this process has mirrored its event types into the database.
    assert response.status_code in (200, 202, 503), response.text
    return response.status_code != 503


@pytest.mark.timeout(120)
async def test_every_metric_in_the_rules_and_the_dashboard_is_in_a_real_scrape(
    db: Conn, db_url: str
) -> None:
    async def reply(received: Received) -> Reply:
        return {"/failing": (503, {}), "/refusing": (400, {})}.get(received.path, (200, {}))

    consumer = RecordingConsumer(reply)
    port = free_port()
    failing, healthy, refusing = "rules-failing", "rules-healthy", "rules-refusing"
    tags = {
        name: {"consumer": name, "event_type": "client", "remember_for": 3600}
        for name in (failing, healthy, refusing)
    }
    exported = Exported()
    async with serve(consumer.app) as base, httpx.AsyncClient(timeout=30) as http:
        config = dispatch_config(
            db_url,
            {
                failing: http_consumer(f"{base}/failing", breaker={"failures": 2, "cooldown": 60}),
                healthy: http_consumer(f"{base}/healthy"),
                refusing: http_consumer(f"{base}/refusing"),
            },
            tags=tags,
            dispatcher={"metrics_port": port},
        )
        await add_marks(db, failing, failing, [(client(f"u{n}"), "p") for n in range(3)])
        await add_marks(db, refusing, refusing, [(client("u1"), "b")])
        dispatcher_url = f"http://127.0.0.1:{port}/metrics"
        async with running(config, db_url), serve(create_app(config)) as api:
            user = bearer(client_token("user-1"))
            for mark in ({"tag": healthy, "id": "h-1"}, {"tag": healthy, "id": "h-1"}):
                response = await http.post(f"{api}/v1/seen", json=mark, headers=user)
                assert response.status_code == 200, response.text
            refused = await http.post(f"{api}/v1/seen", json={"tag": "nope", "id": "x"})
            assert refused.status_code in (400, 401)
            key = auth(new_key(db_url))
            await wait_until(lambda: _event_accepted(api, http, key), 10, "the event catalog")

            async def settled() -> bool:
                text = (await http.get(dispatcher_url)).text
                return (
                    f'mark_notify_breaker_state{{consumer="{failing}"}} 2.0' in text
                    and f'consumer="{healthy}",outcome="delivered"' in text
                    and f'consumer="{refusing}",outcome="failed"' in text
                )

            await wait_until(settled, 20, "deliveries, an open breaker and a dead letter", 0.2)
            for url in (f"{api}/metrics", dispatcher_url):
                response = await http.get(url)
                assert response.status_code == 200
                exported.add(response.text)

    assert "mark_notify_http_requests_total" in exported.labels  # the API's scrape
    assert "mark_notify_deliveries_total" in exported.labels  # the dispatcher's
    problems = check(rule_queries(), exported) + check(dashboard_queries(), exported)
    assert not problems, "\n".join(problems)


# --- promtool, when it can be had ---------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if not path and os.environ.get("CI"):
        pytest.fail("promtool is missing: .ci/run installs it (Debian's prometheus package)")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def run_promtool(*args: str | Path) -> str:
    result = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_loads_the_rules_and_the_config() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", RULES)
    assert "SUCCESS" in run_promtool("check", "config", PROMETHEUS)


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", RULE_TESTS)


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    # Each expression as a recording rule: `check rules` parses it as Prometheus would.
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr}
        for n, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool("check", "rules", path)
