"""``ceap validate`` checks the columns a real-time program names, as the worker does: an
event attribute read without being declared in ``source.columns`` is reported by validate
with the worker's own message, before any event arrives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app

runner = CliRunner()

TAKEOVER: dict[str, Any] = {
    "name": "takeover",
    "source": {"type": "events", "on": ["email_changed"], "columns": {"new_email": "string"}},
    "state": {"pw_then_email": {"sequence": {"first": "password_changed", "then": "email_changed"},
                                "within": "5m", "capture": ["phone"]}},
    "features": {"to_phone": "pw_then_email_phone"},
    "filters": [{"id": "within_5m", "expr": "pw_then_email"}],
    "scorer": {"type": "expression", "expr": "1.0"},
    "action": {"type": "protect", "channels": ["inapp"], "category": "security",
               "payload_columns": ["to_phone", "new_email"]},
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    monkeypatch.setenv("CEAP_CACHE_DIR", "")
    (tmp_path / "programs").mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    events = [{"id": "p1", "type": "password_changed", "ts": now.isoformat(), "customer_id": "C1",
               "attributes": {"phone": "+15550100", "risk_level": 3}},
              {"id": "m1", "type": "email_changed", "ts": (now + timedelta(minutes=3)).isoformat(),
               "customer_id": "C1", "attributes": {"new_email": "x@example.com", "risk_level": 3}}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return tmp_path


def _write(project: Path, **changes: Any) -> None:
    spec = {**TAKEOVER, **changes}
    (project / "programs" / "takeover.yaml").write_text(yaml.safe_dump(spec))


def _worker_error(project: Path) -> str:
    assert runner.invoke(app, ["publish", "events.jsonl"]).exit_code == 0
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 2, result.output
    return result.output.strip().removeprefix("error: ")


def test_the_example_validates_and_runs(project: Path) -> None:
    _write(project)
    assert runner.invoke(app, ["validate", "programs"]).exit_code == 0
    assert runner.invoke(app, ["publish", "events.jsonl"]).exit_code == 0
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 0 and "1 new candidates" in result.output, result.output


@pytest.mark.parametrize("changes, where", [
    ({"filters": [{"id": "risky", "expr": "risk_level > 2"}]}, "filters[0] (risky)"),
    ({"scorer": {"type": "expression", "expr": "0.5 + risk_level / 10.0"}}, "scorer.expr"),
    ({"scorer": {"type": "expression", "weights": {"risk_level": 0.5}}}, "scorer.weights"),
    ({"features": {"to_phone": "pw_then_email_phone", "risky": "risk_level > 2"}},
     "features.risky"),
    ({"action": {**TAKEOVER["action"], "payload_columns": ["to_phone", "risk_level"]}},
     "action.payload_columns"),
])
def test_validate_reports_an_undeclared_attribute_as_the_worker_does(
        project: Path, changes: dict[str, Any], where: str) -> None:
    _write(project, **changes)
    result = runner.invoke(app, ["validate", "programs"])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith(f"programs/takeover.yaml: {where}: unknown column 'risk_level'"), line
    assert "declared in source.columns (risk_level: string, ...)" in line
    # the worker refuses to start on the same problem with the same words, naming the file
    worker_line = _worker_error(project)
    assert worker_line.endswith(line) and "\n" not in worker_line, worker_line


def test_a_declared_attribute_and_sql_outside_the_quick_check_pass(project: Path) -> None:
    _write(project, source={**TAKEOVER["source"], "columns": {"new_email": "string",
                                                             "risk_level": "int"}},
           filters=[{"id": "risky", "expr": "risk_level > 2"},
                    {"id": "json", "expr": "(attributes->>'risk_level')::INT > 2"},
                    {"id": "today", "expr": "event_ts <= current_timestamp"}])
    result = runner.invoke(app, ["validate", "programs"])
    assert result.exit_code == 0, result.output


def test_an_expression_scorer_column_is_checked_before_scoring(project: Path) -> None:
    # batch too: `validate --sources` and `run` name the scorer's unknown column (it was
    # bound only when scoring, a traceback from DuckDB)
    (project / "orders.csv").write_text("customer_id,cart_value\nC1,80\n")
    spec = {"name": "carts", "source": {"type": "csv", "path": "orders.csv"},
            "scorer": {"type": "expression", "expr": "cart_valu / 100.0"},
            "action": {"type": "offer", "channels": ["inapp"]}}
    (project / "programs" / "carts.yaml").write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["validate", "--sources", "programs/carts.yaml"])
    assert result.exit_code == 2, result.output
    assert "programs/carts.yaml: scorer.expr: unknown column 'cart_valu'" in result.output
    result = runner.invoke(app, ["run", "carts"])
    assert result.exit_code != 0 and "scorer.expr: unknown column 'cart_valu'" in result.output, \
        result.output


def test_an_edit_reading_an_undeclared_attribute_keeps_the_last_good_version(tmp_path: Path) -> None:
    # hot reload: "a file that no longer validates is logged and the last good version keeps
    # running"; such an edit used to stop the worker at its next batch
    import os
    import time

    from ceap.model import CandidateQuery
    from ceap.plugin import PluginContext
    from ceap.realtime.embedded import EmbeddedStream
    from ceap.realtime.worker import Worker
    from ceap.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'rt.db'}")
    context = PluginContext(base_dir=tmp_path, store=store)
    (tmp_path / "programs").mkdir()
    path = tmp_path / "programs" / "takeover.yaml"
    path.write_text(yaml.safe_dump(TAKEOVER))
    source = EmbeddedStream.from_dict({"type": "embedded", "stream": "live"}, context)
    worker = Worker(store, source, tmp_path / "programs", context, reload_every=0)
    now = datetime.now(UTC).replace(microsecond=0)

    def send(customer: str, minutes: int) -> None:
        events = [{"id": f"p-{customer}", "type": "password_changed", "customer_id": customer,
                   "ts": (now + timedelta(minutes=minutes)).isoformat(), "attributes": {"phone": "+1"}},
                  {"id": f"m-{customer}", "type": "email_changed", "customer_id": customer,
                   "ts": (now + timedelta(minutes=minutes + 2)).isoformat()}]
        source.publish([json.dumps(e).encode() for e in events])
        while worker.step():
            pass

    try:
        send("A", 0)
        path.write_text(yaml.safe_dump({**TAKEOVER, "filters": [{"id": "risky",
                                                                "expr": "risk_level > 2"}]}))
        os.utime(path, (time.time() + 5, time.time() + 5))
        send("B", 10)
        found = store.candidates(CandidateQuery(program="takeover", limit=10, include_expired=True))
        assert sorted(c.customer_id for c in found) == ["A", "B"]
        assert source.lag() == 0
    finally:
        worker.close()
        store.close()


def test_a_new_program_reading_an_undeclared_attribute_is_refused_and_the_others_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # hot reload: a program added while the worker runs, naming a column its rows lack, is
    # logged (program, file, column) and not run; it used to stop the worker at its next batch
    import logging
    import os
    import time

    from ceap.model import CandidateQuery
    from ceap.plugin import PluginContext
    from ceap.realtime.embedded import EmbeddedStream
    from ceap.realtime.worker import Worker
    from ceap.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'rt.db'}")
    context = PluginContext(base_dir=tmp_path, store=store)
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "takeover.yaml").write_text(yaml.safe_dump(TAKEOVER))
    source = EmbeddedStream.from_dict({"type": "embedded", "stream": "live"}, context)
    worker = Worker(store, source, tmp_path / "programs", context, reload_every=0)
    now = datetime.now(UTC).replace(microsecond=0)

    def send(customer: str, minutes: int) -> None:
        events = [{"id": f"p-{customer}", "type": "password_changed", "customer_id": customer,
                   "ts": (now + timedelta(minutes=minutes)).isoformat(), "attributes": {"phone": "+1"}},
                  {"id": f"m-{customer}", "type": "email_changed", "customer_id": customer,
                   "ts": (now + timedelta(minutes=minutes + 2)).isoformat(),
                   "attributes": {"risk_level": "3"}}]
        source.publish([json.dumps(e).encode() for e in events])
        while worker.step():
            pass

    def found(program: str) -> list[str]:
        return sorted(c.customer_id for c in store.candidates(
            CandidateQuery(program=program, limit=10, include_expired=True)))

    risky = {**TAKEOVER, "name": "risky", "filters": [{"id": "risky", "expr": "risk_level > 2"}]}
    added = tmp_path / "programs" / "risky.yaml"
    try:
        send("A", 0)
        with caplog.at_level(logging.ERROR, logger="ceap.realtime.worker"):
            added.write_text(yaml.safe_dump(risky))
            send("B", 10)
            send("C", 20)  # reloaded again: the same version is not logged twice
        assert found("takeover") == ["A", "B", "C"] and found("risky") == []
        assert source.lag() == 0
        [record] = [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
        assert record.startswith("program risky not loaded: ") and str(added) in record, record
        assert "filters[0] (risky): unknown column 'risk_level'" in record
        assert worker.stats.programs == ["takeover"]
        # declared: the program starts at the next reload
        fixed = {**risky, "source": {**TAKEOVER["source"], "columns": {"new_email": "string",
                                                                      "risk_level": "int"}}}
        added.write_text(yaml.safe_dump(fixed))
        os.utime(added, (time.time() + 5, time.time() + 5))
        send("D", 30)
        assert found("risky") == ["D"] and worker.stats.programs == ["risky", "takeover"]
        # a refused program that is removed is simply gone
        added.write_text(yaml.safe_dump(risky))
        os.utime(added, (time.time() + 10, time.time() + 10))
        send("E", 40)
        added.unlink()
        send("F", 50)
        assert found("takeover") == ["A", "B", "C", "D", "E", "F"] and found("risky") == ["D", "E"]
    finally:
        worker.close()
        store.close()
