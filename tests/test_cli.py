"""The ``ceap`` command line: exit codes, messages, store selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ceap.cli import app
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "big_carts.yaml", base_program())
    return tmp_path


def test_validate_ok_exits_zero(project: Path) -> None:
    result = runner.invoke(app, ["validate", "programs/big_carts.yaml"])
    assert result.exit_code == 0, result.output
    assert "ok programs/big_carts.yaml" in result.output


def test_validate_reports_file_field_message_and_exits_two(project: Path) -> None:
    spec = base_program(selection={"treshold": 0.3})
    write_program(project / "programs" / "typo.yaml", spec)
    result = runner.invoke(app, ["validate", "programs"])
    assert result.exit_code == 2
    assert ("programs/typo.yaml: selection.treshold: unknown field (did you mean 'threshold'?)"
            in result.stderr)


def test_validate_sources_checks_columns(project: Path) -> None:
    spec = base_program(filters=[{"id": "f", "expr": "basket > 1"}])
    write_program(project / "programs" / "cols.yaml", spec)
    assert runner.invoke(app, ["validate", "programs/cols.yaml"]).exit_code == 0
    result = runner.invoke(app, ["validate", "--sources", "programs/cols.yaml"])
    assert result.exit_code == 2
    assert "programs/cols.yaml: filters[0] (f): unknown column 'basket'" in result.stderr


def test_run_by_name_prints_the_funnel_and_stores_candidates(project: Path) -> None:
    result = runner.invoke(app, ["run", "big_carts"])
    assert result.exit_code == 0, result.output
    assert "filter: big_cart" in result.stdout and "new candidates written" in result.stdout
    assert (project / ".ceap" / "ceap.db").exists()  # the embedded default store
    listed = runner.invoke(app, ["candidates", "--json"])
    customers = {c["customer_id"] for c in json.loads(listed.stdout)}
    assert customers == {"c1", "c5"}
    one = runner.invoke(app, ["candidates", "--customer", "c5", "--json"])
    assert [c["customer_id"] for c in json.loads(one.stdout)] == ["c5"]


def test_store_flag_beats_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEAP_STORE", f"sqlite:///{project / 'env.db'}")
    assert runner.invoke(app, ["run", "big_carts"]).exit_code == 0
    assert (project / "env.db").exists()
    flag = f"sqlite:///{project / 'flag.db'}"
    assert runner.invoke(app, ["--store", flag, "run", "big_carts"]).exit_code == 0
    assert (project / "flag.db").exists()


def test_run_all_continues_past_a_failing_program_and_exits_one(project: Path) -> None:
    write_program(project / "programs" / "broken.yaml",
                  base_program(name="broken", filters=[{"id": "f", "expr": "nope > 1"}]))
    result = runner.invoke(app, ["run", "--all", "--json"])
    assert result.exit_code == 1
    outcome = {r["program"]: r["status"] for r in json.loads(result.stdout)}
    assert outcome == {"big_carts": "succeeded", "broken": "failed"}


def test_run_unknown_program_is_an_error(project: Path) -> None:
    result = runner.invoke(app, ["run", "nope"])
    assert result.exit_code == 2
    assert "programs/nope.yaml: file not found" in result.stderr


def test_runs_and_quarantine_commands(project: Path) -> None:
    runner.invoke(app, ["run", "big_carts"])
    runs = runner.invoke(app, ["runs"])
    assert runs.exit_code == 0 and "succeeded" in runs.stdout
    from ceap.model import DEFAULT_TENANT
    from ceap.store import open_store

    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    run_id = store.runs(DEFAULT_TENANT)[0].run_id
    quarantined = runner.invoke(app, ["quarantine", run_id])
    assert "column signup: not a valid date" in quarantined.stdout
    assert "2 quarantined row(s)" in quarantined.stderr


def test_plugins_lists_every_builtin(project: Path) -> None:
    result = runner.invoke(app, ["plugins"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("csv", "jsonl", "parquet", "sql", "expression", "lightgbm", "onnx", "inapp",
                 "sqlite", "postgres"):
        assert name in result.stdout


def test_bad_project_config_exits_two(project: Path) -> None:
    (project / "ceap.yaml").write_text("tennant: x\n")
    result = runner.invoke(app, ["run", "big_carts"])
    assert result.exit_code == 2
    assert "ceap.yaml: tennant: unknown field" in result.stderr


def test_run_with_no_program_file_is_an_error_naming_the_folder(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/cli.md: nothing to run exits 2; a missing or empty programs folder says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["run", "--all"])
    assert missing.exit_code == 2 and f"no program files found in {tmp_path / 'programs'}" in missing.output
    (tmp_path / "programs").mkdir()
    (tmp_path / "empty").mkdir()
    for args in (["run", "--all"], ["run", "empty"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "no program files found" in result.output, args
