"""``schedule:`` in programs and ``scheduler:`` in ceap.yaml; fire times across DST changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ceap.errors import SpecError
from ceap.runtime.cron import Cron
from ceap.spec import load_project, parse_program
from ceap.spec.schedule import Schedule
from tests.helpers import base_program


def program(schedule: Any, **more: Any) -> Any:
    return parse_program(base_program(schedule=schedule, **more), "p.yaml")


def issues(schedule: Any, **more: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        program(schedule, **more)
    return caught.value.lines()


@pytest.mark.parametrize(("text", "cron"), [
    ("hourly", "0 * * * *"), ("daily", "0 0 * * *"), ("weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"),
    ("monthly", "0 0 1 * *"), ("30  2 * * *", "30 2 * * *"),
    ("*/15 9-17 * * mon-fri", "*/15 9-17 * * mon-fri"),
])
def test_words_and_cron_expressions_become_a_schedule(text: str, cron: str) -> None:
    assert program(text).schedule == Schedule(cron=cron)


def test_the_object_form_carries_time_zone_and_catch_up() -> None:
    spec = program({"cron": "0 9 * * *", "timezone": "Europe/Paris", "catch_up": "each",
                    "max_catch_up": 5})
    assert spec.schedule == Schedule(cron="0 9 * * *", timezone="Europe/Paris", catch_up="each",
                                     max_catch_up=5)
    assert program(None).schedule is None
    assert program({"cron": "weekly"}).schedule == Schedule(cron="0 0 * * 0", catch_up="once")


@pytest.mark.parametrize(("schedule", "line"), [
    ("0 25 * * *", "p.yaml: schedule: invalid cron expression '0 25 * * *'"),
    ("dayly", "p.yaml: schedule: unknown schedule 'dayly': did you mean 'daily'?"),
    ("0 0 * * * *", "p.yaml: schedule: cron expression '0 0 * * * *' must have 5 fields"),
    ("0 0 31 2 *", "p.yaml: schedule: cron expression '0 0 31 2 *' never matches a date"),
    ({"cron": "61 * * * *"}, "p.yaml: schedule.cron: invalid cron expression '61 * * * *'"),
    ({"cron": "0 9 * * *", "timezone": "Europe/Pariss"},
     "p.yaml: schedule.timezone: unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?)"),
    ({"cron": "0 9 * * *", "catchup": "each"},
     "p.yaml: schedule.catchup: unknown field (did you mean 'catch_up'?)"),
    ({"cron": "0 9 * * *", "catch_up": "never"}, "p.yaml: schedule.catch_up: Input should be"),
    ({"cron": "0 9 * * *", "max_catch_up": 0}, "p.yaml: schedule.max_catch_up: Input should be"),
    ({"timezone": "UTC"}, "p.yaml: schedule.cron: required field is missing"),
])
def test_a_bad_schedule_names_the_field(schedule: Any, line: str) -> None:
    lines = issues(schedule)
    assert len(lines) == 1 and lines[0].startswith(line), lines


def test_a_real_time_program_takes_no_schedule() -> None:
    source = {"type": "events", "on": ["login"]}
    assert program(None, source=source).schedule is None
    [line] = issues("hourly", source=source)
    assert line.startswith("p.yaml: schedule: a real-time program (source type events) runs on every "
                           "event under `ceap worker`")


def test_ceap_yaml_scheduler_defaults_and_errors(tmp_path: Path) -> None:
    config = load_project(tmp_path).scheduler
    assert (config.timezone, config.dispatch, config.poll, config.lease) == (
        "UTC", True, timedelta(seconds=30), timedelta(seconds=60))
    (tmp_path / "ceap.yaml").write_text("scheduler: {timezone: Europe/Paris, poll: 5s, lease: 2m, "
                                        "dispatch: false}\n")
    config = load_project(tmp_path).scheduler
    assert (config.timezone, config.dispatch, config.poll, config.lease) == (
        "Europe/Paris", False, timedelta(seconds=5), timedelta(minutes=2))
    (tmp_path / "ceap.yaml").write_text("scheduler: {timezone: Mars/Olympus, poll: 0s, lease: 1s, "
                                        "dispach: false}\n")
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)
    where = {line.split(": ")[1] for line in caught.value.lines()}
    assert where == {"scheduler.timezone", "scheduler.poll", "scheduler.lease", "scheduler.dispach"}
    assert "did you mean 'dispatch'?" in str(caught.value)


# -- fire times ----------------------------------------------------------------------
def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_time_the_clocks_skip_fires_once_when_they_jump() -> None:
    # Europe/Paris springs forward on 2026-03-29 at 02:00 CET -> 03:00 CEST (01:00 UTC)
    fires = Cron("30 2 * * *", "Europe/Paris").next(utc(2026, 3, 27), 4)
    assert fires == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30),
                     utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, once
                     utc(2026, 3, 30, 0, 30)]
    # America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC)
    assert Cron("30 2 * * *", "America/New_York").next(utc(2026, 3, 7, 12), 2) == [
        utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]


def test_a_time_that_happens_twice_fires_once_at_its_first_occurrence() -> None:
    # Europe/Paris falls back on 2026-10-25 at 03:00 CEST -> 02:00 CET: 02:30 happens twice
    assert Cron("30 2 * * *", "Europe/Paris").next(utc(2026, 10, 23, 12), 3) == [
        utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # America/New_York falls back on 2026-11-01 at 02:00 EDT -> 01:00 EST: 01:30 happens twice
    assert Cron("30 1 * * *", "America/New_York").next(utc(2026, 10, 31, 12), 3) == [
        utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]


def test_sub_daily_schedules_follow_the_wall_clock_through_both_changes() -> None:
    paris = Cron("*/30 * * * *", "Europe/Paris")
    spring = paris.next(utc(2026, 3, 29, 0, 10), 4)  # 01:30 CET, [02:xx skipped] 03:00 CEST, ...
    assert spring == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30),
                      utc(2026, 3, 29, 2, 0)]
    autumn = paris.next(utc(2026, 10, 25, 0, 10), 3)  # 02:30 CEST, then 03:00 CET: the hour repeats once
    assert autumn == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 30)]


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "UTC"])
@pytest.mark.parametrize("expr", ["30 2 * * *", "*/20 * * * *", "0 * * * *", "45 1 * * 0"])
def test_forward_and_backward_walks_agree(tz: str, expr: str) -> None:
    """Over both of each zone's changes in 2026 (New York: Mar 8, Nov 1; Paris: Mar 29, Oct 25;
    Lord Howe, 30 minutes: Apr 5, Oct 4), the instants found walking forward are those found
    walking backward, strictly increasing, none twice."""
    cron = Cron(expr, tz)
    for start in (utc(2026, 3, 5), utc(2026, 3, 28), utc(2026, 10, 1), utc(2026, 10, 24)):
        end = start + timedelta(days=9)
        forward = []
        for at in cron.after(start):
            if at > end:
                break
            forward.append(at)
        recent, count, capped = cron.between(start, end, 10_000)
        assert recent == forward and count == len(forward) and not capped
        assert all(a < b for a, b in itertools.pairwise(forward))


def test_between_keeps_the_latest_and_counts_all() -> None:
    hourly = Cron("0 * * * *", "UTC")
    recent, count, capped = hourly.between(utc(2026, 1, 1), utc(2026, 1, 1, 10, 30), 3)
    assert recent == [utc(2026, 1, 1, 8), utc(2026, 1, 1, 9), utc(2026, 1, 1, 10)]
    assert (count, capped) == (10, False)
    assert hourly.between(utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 59), 3) == ([], 0, False)
    every_minute = Cron("* * * * *", "UTC")
    recent, count, capped = every_minute.between(utc(2025, 1, 1), utc(2026, 1, 1), 2)
    assert recent == [utc(2025, 12, 31, 23, 59), utc(2026, 1, 1)] and capped and count == 1020


def test_state_on_a_batch_program_is_an_error_not_ignored() -> None:
    """docs/program-spec.md: `state` is for real-time (events) programs; a batch run has no
    event history to compute it from, so it must not be dropped silently."""
    state = {"crashes": {"count": "app_crash", "window": "1d"}}
    [line] = issues(None, state=state)
    assert line.startswith("p.yaml: state: only a real-time program (source type events) has state")
    assert program(None, source={"type": "events", "on": ["app_crash"]}, state=state).state
