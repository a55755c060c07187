"""Churn proof of concept: LightGBM on the IBM Telco table beats the rules baseline, and
the churn_telco program selects held-out customers with the model's reasons."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.poc import churn
from ceap.runtime import run_program
from ceap.spec import load_program
from ceap.store import open_store

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("poc_churn")
    shutil.copytree(PROGRAMS, root / "programs")
    churn.prepare(root, seed=7)
    return root


def test_the_model_beats_the_rules_on_held_out_customers(project: Path) -> None:
    metrics = churn.evaluate(project)
    model, rules = metrics["model"], metrics["rules"]
    assert metrics["held_out"] == 2113 and 0.2 < metrics["churn_rate"] < 0.35
    assert model["roc_auc"] > 0.75
    assert model["roc_auc"] > rules["roc_auc"]
    assert model["precision_top_decile"] > rules["precision_top_decile"] > metrics["churn_rate"]


def test_held_out_customers_carry_no_label_and_were_not_trained_on(project: Path) -> None:
    current = pq.read_table(project / churn.CURRENT)
    history = pq.read_table(project / churn.TRAIN)
    assert "churned" not in current.column_names and "churn" not in current.column_names
    assert not set(current["customer_id"].to_pylist()) & set(history["customer_id"].to_pylist())
    assert current.num_rows + history.num_rows == 7043


def test_the_program_uses_the_training_features(project: Path) -> None:
    spec = load_program(project / "programs" / "churn_telco.yaml")
    assert {k: spec.features[k] for k in churn.FEATURES} == churn.FEATURES
    assert spec.scorer is not None and spec.scorer.type == "lightgbm"
    assert spec.scorer.model == str(churn.MODEL)  # type: ignore[attr-defined]


def test_prepare_is_cached_for_the_seed(project: Path) -> None:
    before = (project / churn.MODEL).stat().st_mtime_ns
    assert churn.prepare(project, seed=7)["seed"] == 7
    assert (project / churn.MODEL).stat().st_mtime_ns == before


def test_the_program_selects_high_risk_customers_with_reasons(project: Path, tmp_path: Path) -> None:
    spec = load_program(project / "programs" / "churn_telco.yaml")
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        result = run_program(spec, store, PluginContext(base_dir=project))
        found = store.candidates(CandidateQuery(program="churn_telco", limit=1000))
    finally:
        store.close()
    assert result.ok and result.funnel.filters["billed_at_least_once"] > 0
    assert 0 < len(found) <= 250
    current = set(pq.read_table(project / churn.CURRENT)["customer_id"].to_pylist())
    for candidate in found:
        assert candidate.customer_id in current
        assert candidate.score >= 0.5
        assert candidate.action_type == "offer" and candidate.channels == ["email"]
        assert candidate.reasons and len(candidate.reasons) <= 3
        assert set(candidate.reasons) <= set(churn.MODEL_FEATURES)
        assert {"contract", "tenure", "monthly_charges"} <= set(candidate.payload)
    # the riskiest customers the program picked really do churn more than the base rate
    outcomes = pq.read_table(project / churn.OUTCOMES)
    churned = dict(zip(outcomes["customer_id"].to_pylist(), outcomes["churned"].to_pylist(),
                       strict=True))
    picked = [churned[c.customer_id] for c in found]
    assert sum(picked) / len(picked) > 2 * sum(churned.values()) / len(churned)
