"""``ceap run --now``: a batch program's windows ("delivered 3 to 10 days ago") are
computed against the time given, so a run is reproducible; a bad value is a usage error
naming the option."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ceap.cli import app
from tests.helpers import write_csv, write_program

runner = CliRunner()
NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
#: days between each customer's delivery and NOW
AGES = {"c1": 2, "c2": 5, "c3": 9, "c4": 12}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(tmp_path / "deliveries.csv", "customer_id,delivered_at",
              [f"{c},{(NOW - timedelta(days=d)).date().isoformat()}" for c, d in AGES.items()])
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "review_request.yaml", {
        "name": "review_request",
        "source": {"type": "csv", "path": "deliveries.csv", "columns": {"delivered_at": "date"}},
        "features": {"days_since_delivery": "date_diff('day', delivered_at, run_date)"},
        "filters": [{"id": "delivered_3_to_10_days_ago", "expr": "days_since_delivery BETWEEN 3 AND 10"}],
        "action": {"type": "request", "channels": ["email"], "expiry": "2d",
                   "payload_columns": ["days_since_delivery"]},
    })
    return tmp_path


def run(*args: str) -> Any:
    result = runner.invoke(app, ["run", "review_request", "--json", *args])
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    return record


def candidates(run_id: str) -> dict[str, dict[str, Any]]:
    result = runner.invoke(app, ["candidates", "--program", "review_request", "--include-expired",
                                 "--json"])
    return {c["customer_id"]: c for c in json.loads(result.stdout) if c["run_id"] == run_id}


def test_the_window_is_computed_against_now(project: Path) -> None:
    first = run("--now", "2026-03-29T12:00:00Z")
    assert first["status"] == "succeeded" and first["funnel"]["written"] == 2
    found = candidates(first["run_id"])
    assert sorted(found) == ["c2", "c3"]  # 5 and 9 days before NOW
    assert found["c2"]["payload"]["days_since_delivery"] == 5
    assert datetime.fromisoformat(found["c2"]["created_at"]) == NOW
    assert datetime.fromisoformat(found["c2"]["expires_at"]) == NOW + timedelta(days=2)
    # four days later, in another time zone: c1 (6 days) comes in, c3 (13 days) goes out
    later = run("--now", "2026-04-02T14:00:00+02:00")
    assert sorted(candidates(later["run_id"])) == ["c1", "c2"]
    again = run("--now", "2026-03-29T12:00:00Z")  # the same time: the same run, nothing new
    assert again["run_id"] != first["run_id"] and again["funnel"]["selected"] == 2
    assert again["funnel"]["written"] == 0


@pytest.mark.parametrize("value, message", [
    ("yesterday", "--now: expected an ISO 8601 time such as 2026-03-29T01:00:00Z, got 'yesterday'"),
    ("2026-03-29T12:00:00", "--now: '2026-03-29T12:00:00' has no time zone (add Z or +01:00)"),
])
def test_a_bad_now_is_a_usage_error(project: Path, value: str, message: str) -> None:
    result = runner.invoke(app, ["run", "review_request", "--now", value])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (project / ".ceap" / "ceap.db").exists()  # nothing ran


def test_help_names_the_option() -> None:
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--now" in result.output
