"""``ceap scheduler`` and ``ceap schedule`` through the CLI (and one real process for signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.runtime.schedule_book import ScheduleBook
from ceap.store import open_store
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    (tmp_path / "programs").mkdir()
    (tmp_path / "ceap.yaml").write_text("scheduler: {timezone: Europe/Paris}\n")
    write_program(tmp_path / "programs" / "big_carts.yaml", base_program(
        schedule={"cron": "30 2 * * *", "catch_up": "skip"}, action={"type": "offer",
                                                                   "channels": ["inapp"]}))
    write_program(tmp_path / "programs" / "nightly_utc.yaml", base_program(
        name="nightly_utc", schedule={"cron": "daily", "timezone": "UTC"}))
    write_program(tmp_path / "programs" / "by_hand.yaml", base_program(name="by_hand"))
    return tmp_path


def ceap(*args: str) -> Any:
    return runner.invoke(app, list(args))


def records(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schedule_lists_time_zone_and_next_runs_across_dst(project: Path) -> None:
    rows = {r["program"]: r for r in records(ceap("schedule", "--json", "--now", "2026-03-28T12:00:00Z"))}
    assert rows["big_carts"]["timezone"] == "Europe/Paris"  # ceap.yaml's default
    assert rows["big_carts"]["next"] == ["2026-03-29T03:00:00+02:00",  # 02:30 skipped: 03:00 CEST
                                         "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    assert (rows["big_carts"]["catch_up"], rows["big_carts"]["last_window"]) == ("skip", None)
    assert rows["nightly_utc"]["schedule"] == "0 0 * * *"
    assert rows["nightly_utc"]["next"][0] == "2026-03-29T00:00:00+00:00"
    assert rows["by_hand"] == {"program": "by_hand", "schedule": None, "note": "not scheduled"}
    piped = ceap("schedule", "--next", "1", "--now", "2026-03-28T12:00:00Z")
    lines = piped.stdout.splitlines()
    assert lines[0].split("\t") == ["program", "schedule", "timezone", "catch_up", "last_window",
                                    "last_status", "last_run", "next"]
    assert "big_carts\t30 2 * * *\tEurope/Paris\tskip\t\t\t\t2026-03-29T03:00:00+02:00" in lines


def test_scheduler_once_runs_what_is_due_and_records_it(project: Path) -> None:
    first = records(ceap("scheduler", "--once", "--json", "--now", "2026-03-28T12:00:00Z"))
    assert first == []  # first sight: nothing before now is made up
    done = records(ceap("scheduler", "--once", "--json", "--now", "2026-03-29T01:00:30Z"))
    assert [(d["program"], d["fire_at"], d["status"]) for d in done] == [
        ("big_carts", "2026-03-29T01:00:00+00:00", "succeeded"),
        ("nightly_utc", "2026-03-29T00:00:00+00:00", "succeeded")]  # 1 h late: catch_up once
    runs = records(ceap("runs", "--json"))
    assert sorted(r["run_id"] for r in runs) == sorted(d["run_id"] for d in done)
    listed = {r["program"]: r for r in records(ceap("schedule", "--json", "--now",
                                                    "2026-03-29T01:00:30Z"))}
    assert listed["big_carts"]["last_window"] == "2026-03-29T03:00:00+02:00"
    assert listed["big_carts"]["last_status"] == "succeeded"
    assert listed["big_carts"]["next"][0] == "2026-03-30T02:30:00+02:00"
    # dispatch: true (the default) delivered the in-app candidates in the same tick
    delivered = [d for d in records(ceap("deliveries", "--json")) if d["program"] == "big_carts"]
    assert {(d["channel"], d["status"]) for d in delivered} == {("inapp", "delivered")}
    # three days later: big_carts (catch_up skip) skips what it missed, nightly_utc runs its latest
    later = records(ceap("scheduler", "--once", "--json", "--no-dispatch", "--now",
                         "2026-04-01T12:00:00Z"))
    assert [(d["program"], d["status"], d["windows"]) for d in later] == [
        ("big_carts", "missed", 3), ("nightly_utc", "missed", 2), ("nightly_utc", "succeeded", 1)]
    history = records(ceap("schedule", "--history", "--json", "--program", "big_carts"))
    assert [(h["status"], h["windows"]) for h in history] == [("missed", 3), ("succeeded", 1)]
    assert "catch_up: skip" in history[0]["detail"]
    piped = ceap("schedule", "--history", "--program", "big_carts").stdout.splitlines()
    assert piped[0].split("\t")[:3] == ["program", "fire_at", "status"]
    assert piped[1].startswith("big_carts\t2026-03-30T02:30:00+02:00\tmissed\t3\t")  # in its zone
    table = ceap("scheduler", "--once", "--now", "2026-04-01T12:00:05Z")  # piped: a header, no rows
    assert table.exit_code == 0 and table.stdout.splitlines() == [
        "program\twindow\tstatus\twindows\trun_id\tdetail"]


def test_scheduler_reports_bad_files_failed_runs_and_bad_options(project: Path) -> None:
    (project / "programs" / "broken.yaml").write_text("name: broken\nschedule: dayly\n")
    write_program(project / "programs" / "no_source.yaml", base_program(
        name="no_source", schedule="hourly", source={"type": "csv", "path": "gone.csv"}))
    ceap("scheduler", "--once", "--now", "2026-03-28T12:00:00Z")
    result = ceap("scheduler", "--once", "--json", "--no-dispatch", "--now", "2026-03-28T13:00:10Z")
    assert result.exit_code == 1  # a run failed
    assert "not scheduled: " in result.stderr and "broken.yaml: schedule: unknown schedule 'dayly'" \
        in result.stderr
    [failed] = json.loads(result.stdout)
    assert failed["program"] == "no_source" and failed["status"] == "failed"
    assert "gone.csv" in failed["detail"]
    assert "no_source 2026-03-28 14:00 CET: failed" in result.stderr  # a progress line
    bad = ceap("scheduler", "--now", "2026-03-28T12:00:00Z")
    assert bad.exit_code == 2 and "--now needs --once" in bad.stderr
    bad = ceap("scheduler", "--once", "--now", "2026-03-28 12:00")
    assert bad.exit_code == 2 and "has no time zone" in bad.stderr
    listed = ceap("schedule", "--json")
    assert listed.exit_code == 2 and "not scheduled: " in listed.stderr  # reported, the rest listed
    assert sorted(r["program"] for r in json.loads(listed.stdout)) == [
        "big_carts", "by_hand", "nightly_utc", "no_source"]
    bad = ceap("schedule", "--program", "nope")
    assert bad.exit_code == 2 and "no program 'nope'" in bad.stderr


def test_a_standby_scheduler_runs_nothing(project: Path) -> None:
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    try:
        now = datetime(2026, 3, 29, 1, 0, 30, tzinfo=UTC)
        assert ScheduleBook(store, "default").acquire("scheduler:default", "other-host:1", now,
                                                      timedelta(minutes=5))
    finally:
        store.close()
    result = ceap("scheduler", "--once", "--json", "--now", "2026-03-29T01:00:30Z")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "standing by: scheduler other-host:1 is active" in result.stderr


def test_sigterm_stops_the_scheduler_cleanly_and_gives_the_lease_up(project: Path) -> None:
    (project / "ceap.yaml").write_text("scheduler: {poll: 0.2s, lease: 3s}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CEAP_STORE", None)
    proc = subprocess.Popen([sys.executable, "-c", "from ceap.cli import app; app()", "scheduler"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # blocks until the first tick has taken the lease
        assert "active: running the programs on their schedules" in first, first
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "stopping after the current step" in rest and "scheduler stopped" in rest
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    try:
        lease = ScheduleBook(store, "default").lease("scheduler:default")
        assert lease is not None and lease.until < datetime.now(UTC)  # given up, not left to lapse
    finally:
        store.close()
