"""A schedule's times: its cron read in its time zone, across daylight saving; its event's
idempotency key; and the config refusing what could not be scheduled."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.config.base import ConfigError
from service.config.load import parse_config
from service.schedule_store import idempotency_key, next_run
from tests.support import config_data

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_monday_nine_in_berlin_is_nine_in_berlin_in_winter_and_in_summer() -> None:
    # Tuesday 24 November 2026 (CET, UTC+1) -> Monday 30 November, 08:00 UTC.
    assert next_run("0 9 * * 1", BERLIN, utc(2026, 11, 24, 6, 0)) == utc(2026, 11, 30, 8, 0)
    # June (CEST, UTC+2) -> 07:00 UTC.
    assert next_run("0 9 * * 1", BERLIN, utc(2027, 6, 2, 12, 0)) == utc(2027, 6, 7, 7, 0)
    # The same cron in UTC.
    assert next_run("0 9 * * 1", "UTC", utc(2026, 11, 24, 6, 0)) == utc(2026, 11, 30, 9, 0)
    # Strictly after: a run at its time computes the next one, not itself.
    assert next_run("0 9 * * 1", BERLIN, utc(2026, 11, 30, 8, 0)) == utc(2026, 12, 7, 8, 0)


def test_daylight_saving_neither_skips_nor_doubles_a_daily_run() -> None:
    # Clocks go forward at 02:00 on 28 March 2027: 02:30 does not exist that night; the run
    # is at 03:00 CEST (01:00 UTC), and on the next day at 02:30 CEST again.
    first = next_run("30 2 * * *", BERLIN, utc(2027, 3, 27, 12, 0))
    assert first == utc(2027, 3, 28, 1, 0)
    assert next_run("30 2 * * *", BERLIN, first, first) == utc(2027, 3, 29, 0, 30)
    # Clocks go back at 03:00 on 25 October 2026: 02:30 comes twice; it runs once.
    first = next_run("30 2 * * *", BERLIN, utc(2026, 10, 24, 12, 0))
    assert first == utc(2026, 10, 25, 0, 30)
    assert next_run("30 2 * * *", BERLIN, first, first) == utc(2026, 10, 26, 1, 30)


def test_the_idempotency_key_names_the_schedule_and_the_time_in_utc() -> None:
    at = datetime.fromisoformat("2026-11-30T09:00:00+01:00")
    assert idempotency_key("weekly-newsletter", at) == (
        "schedule:weekly-newsletter:2026-11-30T08:00:00+00:00"
    )


def schedule(**entry: Any) -> dict[str, Any]:
    return {
        "cron": "0 9 * * 1",
        "event_type": "new_episode",
        "audience": {"all": True},
    } | entry


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (schedule(cron="0 9 * *"), "test.toml: cron: '0 9 * *' is not a cron expression"),
        (schedule(cron="0 0 9 * * 1"), "is not a cron expression"),
        (schedule(timezone="Europe/Atlantis"), "unknown time zone 'Europe/Atlantis'"),
        (schedule(timezone="localtime"), "unknown time zone 'localtime'"),
        (schedule(audience={"all": True, "topic": "t"}), "exactly one of topic, all = true"),
        (schedule(audience={}), "exactly one of topic, all = true"),
        (schedule(source={"kind": "sql", "query": " "}), "source.query: must not be empty"),
        (schedule(source={"kind": "http", "url": "ftp://x"}), "an http(s) URL is needed"),
        (schedule(source={"kind": "ftp"}), "Invalid value 'ftp' - at `$.schedules.s.source.kind`"),
        (schedule(every="day"), "unknown field `every` - at `$.schedules.s`"),
    ],
)
def test_the_config_refuses_a_schedule_it_could_not_run(entry: dict[str, Any], reason: str) -> None:
    data = config_data("postgresql:///x") | {"schedules": {"s": entry}}
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "test.toml")
    assert reason in str(raised.value)


def test_the_procrastinate_tick_may_count_seconds() -> None:
    data = config_data("postgresql:///x")
    data["scheduler"] = {"tick": "*/5 * * * * *"}
    assert parse_config(data, "t").scheduler.tick == "*/5 * * * * *"
    data["scheduler"] = {"retention_cron": "17 3 * *"}
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "t")
    assert "scheduler.retention_cron: '17 3 * *' is not a cron expression" in str(raised.value)
