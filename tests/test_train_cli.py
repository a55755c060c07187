"""``ceap train`` and the model checks of ``ceap validate``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app
from tests.helpers import write_program
from tests.ml_helpers import churn_table

runner = CliRunner()
TRAIN = ["train", "churn", "--source", "history.parquet", "--features", "recency,orders,spend",
         "--label", "churned", "--trees", "20"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    pq.write_table(churn_table(1000), tmp_path / "history.parquet")
    (tmp_path / "programs").mkdir()
    return tmp_path


def test_train_writes_a_versioned_artefact_and_prints_the_metrics(project: Path) -> None:
    result = runner.invoke(app, [*TRAIN, "--time-column", "ts"])
    assert result.exit_code == 0, result.output
    assert "churn@1\troc_auc\t" in result.stdout and "model churn@1 written to" in result.stderr
    assert "read 1000 rows from parquet: history.parquet" in result.stderr
    assert "split time: 800 training rows, 200 held-out rows" in result.stderr
    meta = json.loads((project / "models" / "churn" / "1" / "meta.json").read_text())
    assert meta["split"]["column"] == "ts" and meta["metrics"]["roc_auc"] > 0.8
    again = runner.invoke(app, [*TRAIN, "--kind", "xgboost", "--json"])
    assert again.exit_code == 0, again.output
    printed = json.loads(again.stdout)
    assert printed["model"] == "churn@2" and printed["metrics"]["rows"] == 200
    assert json.loads((project / "models" / "churn" / "2" / "meta.json").read_text())["kind"] == "xgboost"


def test_train_reads_a_sql_source_from_a_spec_file(project: Path) -> None:
    table = churn_table(300)
    with sqlite3.connect(project / "crm.db") as con:
        con.execute("CREATE TABLE history (recency REAL, orders INTEGER, spend REAL, churned INTEGER)")
        con.executemany("INSERT INTO history VALUES (?, ?, ?, ?)",
                        [(r["recency"], r["orders"], r["spend"], int(r["churned"]))
                         for r in table.to_pylist()])
    (project / "history.yaml").write_text(yaml.safe_dump({"source": {
        "type": "sql", "connection": "sqlite:///crm.db",
        "query": "SELECT recency, orders, spend, churned FROM history"}}))
    result = runner.invoke(app, ["train", "crm", "--source-spec", "history.yaml", "--features",
                                 "recency,orders,spend", "--label", "churned", "--trees", "10"])
    assert result.exit_code == 0, result.output
    meta = json.loads((project / "models" / "crm" / "1" / "meta.json").read_text())
    assert meta["fingerprint"]["rows"] == 300 and meta["split"]["method"] == "random"
    assert meta["source"] == "sql: query"


@pytest.mark.parametrize(("args", "message"), [
    (["--features", "recency,basket"], "--features: column 'basket' is not in the table"),
    (["--features", "recency,country"], "--features: column 'country' holds string, not numbers"),
    (["--label", "orders", "--features", "recency"], "--label: column 'orders' is not binary"),
    (["--kind", "catboost"], "--kind: unknown kind 'catboost'"),
    (["--source", "history.txt"], "--source: cannot tell the format of 'history.txt'"),
    (["--source", "missing.parquet"], "source.path: no file matches 'missing.parquet'"),
])
def test_bad_input_exits_two_with_a_clear_message(project: Path, args: list[str], message: str) -> None:
    command = list(TRAIN)
    for option, value in zip(args[::2], args[1::2], strict=True):
        if option in command:
            command[command.index(option) + 1] = value
        else:
            command += [option, value]
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (project / "models" / "churn").exists() or not any((project / "models" / "churn").iterdir())


def test_too_few_rows_exits_two(project: Path) -> None:
    pq.write_table(churn_table(12), project / "history.parquet")
    result = runner.invoke(app, TRAIN)
    assert result.exit_code == 2 and "too few rows: 12 usable row(s)" in result.stderr


def test_exactly_one_source_is_needed(project: Path) -> None:
    result = runner.invoke(app, ["train", "churn", "--features", "recency", "--label", "churned"])
    assert result.exit_code == 2 and "give exactly one of --source and --source-spec" in result.stderr


def _program(scorer: dict[str, object], columns: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "name": "churn_save",
        "source": {"type": "parquet", "path": "history.parquet", "columns": columns or {}},
        "scorer": scorer,
        "action": {"type": "offer", "channels": ["email"]},
    }


def test_validate_checks_a_program_against_its_model(project: Path) -> None:
    assert runner.invoke(app, TRAIN).exit_code == 0
    programs = project / "programs"
    write_program(programs / "good.yaml", _program({"type": "lightgbm", "model": "churn@1",
                                                    "features": ["recency", "orders", "spend"]},
                                                   {"orders": "int"}))
    write_program(programs / "latest.yaml", _program({"type": "lightgbm", "model": "churn"}))
    ok = runner.invoke(app, ["validate", "programs/good.yaml", "programs/latest.yaml", "--sources"])
    assert ok.exit_code == 0, ok.output

    write_program(programs / "fewer.yaml", _program({"type": "lightgbm", "model": "churn@latest",
                                                     "features": ["recency", "orders"]}))
    result = runner.invoke(app, ["validate", "programs/fewer.yaml"])
    assert result.exit_code == 2
    assert ("programs/fewer.yaml: scorer.features: model churn@1 was trained on recency, orders, "
            "spend (in this order); the program gives recency, orders") in result.stderr

    write_program(programs / "typed.yaml", _program({"type": "lightgbm", "model": "churn"},
                                                    {"spend": "string"}))
    result = runner.invoke(app, ["validate", "programs/typed.yaml"])
    assert result.exit_code == 2
    assert ("programs/typed.yaml: scorer.features: model churn@1 reads 'spend' as float, but "
            "source.columns declares it string") in result.stderr

    write_program(programs / "unknown.yaml", _program({"type": "xgboost", "model": "attrition@2"}))
    result = runner.invoke(app, ["validate", "programs/unknown.yaml"])
    assert result.exit_code == 2
    assert "programs/unknown.yaml: scorer.model: no model named 'attrition'" in result.stderr

    write_program(programs / "kind.yaml", _program({"type": "xgboost", "model": "churn@1"}))
    result = runner.invoke(app, ["validate", "programs/kind.yaml"])
    assert result.exit_code == 2
    assert "scorer.model: churn@1 is a lightgbm model" in result.stderr


def test_validate_leaves_model_files_to_the_run(project: Path) -> None:
    write_program(project / "programs" / "file.yaml",
                  _program({"type": "lightgbm", "model": "models/not_trained_yet.txt"}))
    assert runner.invoke(app, ["validate", "programs/file.yaml"]).exit_code == 0
