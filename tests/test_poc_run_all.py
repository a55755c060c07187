"""ceap.poc.run_all: the three proofs of concept prepared, measured and run in one call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from ceap.poc import PROGRAMS, run_all

REPO_PROGRAMS = Path(__file__).resolve().parents[1] / "programs"


def test_run_all_prints_the_figures_and_writes_candidates(tmp_path: Path) -> None:
    shutil.copytree(REPO_PROGRAMS, tmp_path / "programs")
    console = Console(record=True, width=120)
    results = run_all(tmp_path, f"sqlite:///{tmp_path / 'ceap.db'}", console, seed=7,
                      fraud_users=3_000)
    assert [r.program for r in results] == list(PROGRAMS)
    assert all(r.ok for r in results), [r.error for r in results]
    assert all(r.funnel.selected > 0 for r in results)
    text = console.export_text()
    for heading in ("churn_telco: LightGBM vs rules", "recs_movielens: ALS vs popularity",
                    "fraud_takeover: LightGBM at 0.3 vs rules"):
        assert heading in text
    assert "because" in text and "gets 10 items" in text
    # the second run reuses the prepared data and models
    again = run_all(tmp_path, f"sqlite:///{tmp_path / 'ceap.db'}", Console(record=True), seed=7,
                    fraud_users=3_000)
    assert all(r.ok for r in again)


def test_a_missing_program_fails_that_proof_of_concept_only(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO_PROGRAMS, tmp_path / "programs")
    (tmp_path / "programs" / "recs_movielens.yaml").unlink()
    from ceap.poc import recs

    monkeypatch.setattr(recs, "prepare", lambda root, seed: {"metrics": {}})  # skip the training
    results = run_all(tmp_path, f"sqlite:///{tmp_path / 'ceap.db'}", Console(record=True), seed=7,
                      fraud_users=3_000)
    by_name = {r.program: r for r in results}
    assert not by_name["recs_movielens"].ok and "recs_movielens.yaml" in str(by_name["recs_movielens"].error)
    assert by_name["churn_telco"].ok and by_name["fraud_takeover"].ok
