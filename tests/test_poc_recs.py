"""Recommendations proof of concept: ALS on MovieLens beats popularity on a time split, and
the recs_movielens program puts ten unseen items in each candidate's payload."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ceap.errors import SourceError
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.poc import recs
from ceap.registry import default_registry
from ceap.runtime import run_program
from ceap.scorers.recs import AffinityModel, ItemAffinityScorer
from ceap.spec import load_program
from ceap.store import open_store

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("poc_recs")
    shutil.copytree(PROGRAMS, root / "programs")
    recs.prepare(root, seed=7)
    return root


def test_als_beats_popularity_on_the_future_ratings(project: Path) -> None:
    metrics = recs.evaluate(project)
    model, popular = metrics["model"], metrics["popularity"]
    assert metrics["users"] > 600
    assert model["precision@10"] > popular["precision@10"]
    assert model["recall@10"] > popular["recall@10"]


def test_the_split_is_in_time_per_user(project: Path) -> None:
    history = pq.read_table(project / recs.HISTORY)
    future = pq.read_table(project / recs.FUTURE)
    assert history.num_rows + future.num_rows == 100_004
    assert 0.15 < future.num_rows / 100_004 < 0.2
    last = {}
    for c, t in zip(history["customer_id"].to_pylist(), history["rated_at"].to_pylist(), strict=True):
        last[c] = max(last.get(c, t), t)
    assert all(t >= last[c] for c, t in zip(future["customer_id"].to_pylist(),
                                            future["rated_at"].to_pylist(), strict=True))


def test_the_model_file_is_a_pickle_free_npz(project: Path) -> None:
    with np.load(project / recs.MODEL, allow_pickle=False) as archive:
        assert {"customer_ids", "item_ids", "user_factors", "item_factors", "seen_indptr",
                "seen_indices", "item_names"} <= set(archive.files)
        assert archive["user_factors"].shape[1] == recs.FACTORS


def test_prepare_is_cached_for_the_seed(project: Path) -> None:
    before = (project / recs.MODEL).stat().st_mtime_ns
    manifest = recs.prepare(project, seed=7)
    assert (project / recs.MODEL).stat().st_mtime_ns == before
    assert manifest["seed"] == 7 and manifest["metrics"]["model"]["precision@10"] > 0


def test_the_program_recommends_ten_unseen_items(project: Path, tmp_path: Path) -> None:
    spec = load_program(project / "programs" / "recs_movielens.yaml")
    assert spec.action.type == "recommend" and spec.action.items == 10
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        result = run_program(spec, store, PluginContext(base_dir=project))
        assert result.ok and result.funnel.selected > 500
        found = store.candidates(CandidateQuery(program="recs_movielens", limit=5000))
    finally:
        store.close()
    assert len(found) == result.funnel.selected
    history = pq.read_table(project / recs.HISTORY)
    seen: dict[str, set[str]] = {}
    for c, i in zip(history["customer_id"].to_pylist(), history["item_id"].to_pylist(), strict=True):
        seen.setdefault(c, set()).add(i)
    for candidate in found:
        items = candidate.payload["items"]
        assert 1 <= len(items) <= 10
        assert not {item["item"] for item in items} & seen[candidate.customer_id]
        scores = [item["score"] for item in items]
        assert scores == sorted(scores, reverse=True)
        assert candidate.score == pytest.approx(scores[0], abs=1e-3)
        assert all(item["name"] for item in items)
        assert candidate.payload["liked"] >= 10


# -- the item_affinity scorer on a hand-made model ----------------------------------------------

@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    model = AffinityModel(
        customer_ids=np.array(["a", "b"]), item_ids=np.array(["i1", "i2", "i3"]),
        user_factors=np.array([[1.0, 0.0], [0.0, 1.0]]),
        item_factors=np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.8]]),
        seen_indptr=np.array([0, 1, 1]), seen_indices=np.array([0]),  # a has i1
        item_names=np.array(["One", "Two", "Three"]),
    )
    model.save(tmp_path / "m.npz")
    return tmp_path


def test_the_scorer_is_registered() -> None:
    assert default_registry().get("scorer", "item_affinity") is ItemAffinityScorer


def test_scores_and_recommendations_leave_out_seen_items(tiny: Path) -> None:
    scorer = ItemAffinityScorer.from_dict({"type": "item_affinity", "model": "m.npz"},
                                          PluginContext(base_dir=tiny))
    table = pa.table({"customer_id": ["a", "zz", "b", None]})
    scores = scorer.score(table)
    assert scores[0] == pytest.approx(0.5) and scores[2] == pytest.approx(0.8)
    assert np.isnan(scores[1]) and np.isnan(scores[3])  # unknown: unscored
    got = scorer.recommend(table, 5)
    assert [i["item"] for i in got[0]] == ["i2", "i3"]  # i1 already seen
    assert [i["item"] for i in got[2]] == ["i3", "i2", "i1"]
    assert got[2][0] == {"item": "i3", "score": pytest.approx(0.8), "name": "Three"}
    assert got[1] == [] and got[3] == []
    assert scorer.features() == ["customer_id"]
    assert scorer.model_id().startswith("m@")


def test_a_missing_or_broken_model_file_is_named(tmp_path: Path) -> None:
    context = PluginContext(base_dir=tmp_path)
    scorer = ItemAffinityScorer.from_dict({"type": "item_affinity", "model": "nope.npz"}, context)
    with pytest.raises(SourceError, match="nope.npz"):
        scorer.score(pa.table({"customer_id": ["a"]}))
    np.savez(tmp_path / "bad.npz", item_ids=np.array(["x"]))
    scorer = ItemAffinityScorer.from_dict({"type": "item_affinity", "model": "bad.npz"}, context)
    with pytest.raises(SourceError, match="lacks customer_ids"):
        scorer.score(pa.table({"customer_id": ["a"]}))
