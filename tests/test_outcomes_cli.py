"""``ceap outcomes attribute`` and ``export`` end to end through the CLI, and the
sweep keeping candidates while their conversions can still come."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app
from ceap.store import open_store
from tests.helpers import base_program, write_program
from tests.outcome_helpers import add_delivery, rows, seed

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "big_carts.yaml",
                  base_program(goal={"event": "purchase", "within": "7d", "value": "amount"}))
    return tmp_path


def store_of(project: Path):  # type: ignore[no-untyped-def]
    return open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")


def test_import_attribute_and_export_from_the_command_line(project: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = store_of(project)
    [cid] = seed(store, now - timedelta(days=1), program="big_carts", customer_id="ana")
    add_delivery(store, cid, sent_at=now - timedelta(days=1))
    store.close()
    (project / "orders.csv").write_text(f"event_id,customer_id,type,ts,amount\n"
                                        f"o1,ana,purchase,{(now - timedelta(hours=2)).isoformat()},30\n"
                                        f"o2,bob,purchase,{(now - timedelta(hours=2)).isoformat()},5\n")
    assert runner.invoke(app, ["outcomes", "import", "orders.csv", "--value", "amount"]).exit_code == 0
    first = runner.invoke(app, ["outcomes", "attribute", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {"conversions": {"big_carts": 1}, "inserted": 1, "candidates": 1,
                                        "goal_events": 2}
    assert json.loads(runner.invoke(app, ["outcomes", "attribute", "--json"]).stdout)["inserted"] == 0
    text = runner.invoke(app, ["outcomes", "attribute"])
    assert "0 new conversion(s) from 2 goal event(s)" in text.stdout

    assert runner.invoke(app, ["outcomes", "export"]).exit_code == 2  # no exports configured
    (project / "ceap.yaml").write_text(yaml.safe_dump(
        {"exports": [{"type": "jsonl", "path": "warehouse/outcomes.jsonl", "grace": "0s"}]}))
    done = runner.invoke(app, ["outcomes", "export", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"jsonl": {"sent": 1, "suppressed": 0, "engaged": 0, "converted": 1}}
    lines = (project / "warehouse" / "outcomes.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["sent", "converted"]


def test_sweep_keeps_expired_candidates_within_the_longest_goal_window(project: Path) -> None:
    now = datetime.now(UTC)
    store = store_of(project)
    recent, old = seed(store, now - timedelta(days=30), 2, program="big_carts",
                       expires_at=lambda i: now - timedelta(days=[2, 10][i]))
    store.close()
    result = runner.invoke(app, ["sweep"])
    assert result.exit_code == 0 and "removed 1 expired candidate(s)" in result.stdout
    store = store_of(project)
    assert rows(store, "SELECT id FROM candidates") == [(recent,)]
    assert old != recent
