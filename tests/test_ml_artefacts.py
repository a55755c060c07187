"""Models as artefacts: metadata, versions, references, splits, metrics, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ceap.errors import SourceError
from ceap.ml.artefacts import ModelRef, ModelRegistry, fingerprint, parse_ref
from ceap.ml.data import TrainError
from ceap.ml.metrics import binary_metrics, log_loss, roc_auc
from ceap.ml.train import TrainOptions, TrainParams, labels, split, train
from tests.ml_helpers import FEATURES, churn_table, train_kind


def test_training_writes_the_model_file_and_its_metadata(tmp_path: Path) -> None:
    artefact = train_kind(tmp_path / "models", "lightgbm")
    folder = tmp_path / "models" / "churn" / "1"
    assert artefact.folder == folder and (folder / "model.txt").is_file()
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["name"], meta["version"], meta["kind"], meta["file"]) == ("churn", 1, "lightgbm",
                                                                          "model.txt")
    assert meta["features"] == [{"name": "recency", "type": "float"},
                                {"name": "orders", "type": "int"},
                                {"name": "spend", "type": "float"}]
    assert meta["label"] == "churned"
    assert len(meta["fingerprint"]["sha256"]) == 64 and meta["fingerprint"]["rows"] == 3000
    assert set(meta["metrics"]) >= {"roc_auc", "log_loss", "precision_at_top_decile", "base_rate"}
    assert meta["split"]["method"] == "time" and meta["split"]["test_rows"] == 600
    assert meta["created_at"].startswith("20") and {"ceap", "lightgbm", "numpy"} <= set(meta["libraries"])
    assert not [p for p in (tmp_path / "models" / "churn").iterdir() if p.name.startswith(".")]


def test_versions_increase_and_latest_is_the_highest(tmp_path: Path) -> None:
    root = tmp_path / "models"
    assert [train_kind(root, "lightgbm", trees=5).meta.version for _ in range(3)] == [1, 2, 3]
    (root / "churn" / "7").mkdir()  # an unfinished folder: never resolved, but never reused
    registry = ModelRegistry(root)
    assert registry.versions("churn") == [1, 2, 3]
    for ref in ("churn", "churn@latest"):
        assert registry.resolve(ref).meta.version == 3
    assert registry.resolve("churn@2").meta.ref == "churn@2"
    assert train_kind(root, "lightgbm", trees=5).meta.version == 8
    with pytest.raises(SourceError, match=r"scorer.model: model 'churn' has no version 5 "
                                          r"\(versions: 1, 2, 3, 8\)"):
        registry.resolve("churn@5")
    with pytest.raises(SourceError, match="no model named 'other'.*models: churn"):
        registry.resolve("other")


@pytest.mark.parametrize(("text", "ref"), [
    ("churn", ModelRef("churn", None)),
    ("churn@latest", ModelRef("churn", None)),
    ("churn@3", ModelRef("churn", 3)),
    ("win-back_2@12", ModelRef("win-back_2", 12)),
    ("models/churn.txt", None),
    ("churn.txt", None),
    ("churn@v3", None),
    ("./churn", None),
])
def test_model_references_and_file_paths_are_told_apart(text: str, ref: ModelRef | None) -> None:
    assert parse_ref(text) == ref


def test_fingerprint_follows_the_data_not_the_chunking() -> None:
    table = churn_table(200)
    chunked = pa.concat_tables([table.slice(0, 50), table.slice(50)])
    assert fingerprint(table) == fingerprint(chunked)
    changed = table.set_column(1, "recency", pc.add(table.column("recency"), 1.0))
    assert fingerprint(changed).sha256 != fingerprint(table).sha256


def test_time_split_holds_out_the_latest_rows() -> None:
    table = churn_table(1000)
    y = labels(table.column("churned"), "churned")
    parts = split(table, y, TrainOptions("m", FEATURES, "churned", time_column="ts"))
    ts = np.asarray(table.column("ts").to_numpy(zero_copy_only=False))
    assert parts.test.size == 200 and parts.train.size == 800
    assert ts[parts.train].max() < ts[parts.test].min()
    assert (np.diff(ts[parts.train]) >= np.timedelta64(0)).all()  # learnt in time order
    assert parts.info["cutoff"] == ts[parts.test].min().astype("datetime64[us]").item().isoformat()


def test_random_split_is_seeded() -> None:
    table = churn_table(500)
    y = labels(table.column("churned"), "churned")
    one = split(table, y, TrainOptions("m", FEATURES, "churned"))
    two = split(table, y, TrainOptions("m", FEATURES, "churned"))
    other = split(table, y, TrainOptions("m", FEATURES, "churned", params=TrainParams(seed=8)))
    assert np.array_equal(one.test, two.test) and not np.array_equal(one.test, other.test)
    assert one.info["method"] == "random" and one.test.size == 100


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "sklearn", "onnx-from-lightgbm", "river"])
def test_a_learnable_table_gives_a_good_held_out_auc(tmp_path: Path, kind: str) -> None:
    meta = train_kind(tmp_path, kind).meta
    assert meta.metrics["roc_auc"] > 0.8, meta.metrics
    assert 0 < meta.metrics["base_rate"] < 1 and meta.metrics["rows"] == 600


@pytest.mark.parametrize(("change", "message"), [
    ({"features": ["recency", "basket"]}, "--features: column 'basket' is not in the table"),
    ({"features": ["recency", "country"]}, "--features: column 'country' holds string, not numbers"),
    ({"label": "orders", "features": ["recency"]},
     "--label: column 'orders' is not binary: besides 0 and 1 it holds 2, 3"),
    ({"label": "country"}, "--label: column 'country' holds string"),
    ({"time_column": "country"}, "--time-column: column 'country' holds string"),
    ({"kind": "catboost"}, "--kind: unknown kind 'catboost'"),
    ({"test_share": 1.5}, "--test-share: must be between 0 and 1"),
])
def test_bad_input_is_refused_with_the_option_named(tmp_path: Path, change: dict[str, object],
                                                    message: str) -> None:
    fields = {"name": "m", "features": list(FEATURES), "label": "churned", **change}
    with pytest.raises(TrainError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(churn_table(300), TrainOptions(**fields), ModelRegistry(tmp_path))  # type: ignore[arg-type]
    assert ModelRegistry(tmp_path).versions("m") == []


def test_too_few_rows_or_one_class_is_refused(tmp_path: Path) -> None:
    options = TrainOptions("m", list(FEATURES), "churned")
    with pytest.raises(TrainError, match="too few rows: 10 usable row"):
        train(churn_table(10), options, ModelRegistry(tmp_path))
    table = churn_table(300)
    table = table.set_column(4, "churned", pa.array([False] * 300))
    with pytest.raises(TrainError, match="too few rows: the training rows hold only label False"):
        train(table, options, ModelRegistry(tmp_path))


def test_rows_without_a_label_are_dropped(tmp_path: Path) -> None:
    table = churn_table(400)
    masked = pa.array([None if i % 10 == 0 else v
                       for i, v in enumerate(table.column("churned").to_pylist())], pa.bool_())
    said: list[str] = []
    meta = train(table.set_column(4, "churned", masked), TrainOptions("m", list(FEATURES), "churned"),
                 ModelRegistry(tmp_path), say=said.append).meta
    assert meta.fingerprint is not None and meta.fingerprint.rows == 360
    assert any("dropped 40 row(s)" in line for line in said)


def test_metrics_match_their_definitions() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    p = np.round(np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1), 2)  # ties included
    assert roc_auc(y, p) == pytest.approx(sklearn_metrics.roc_auc_score(y, p))
    assert log_loss(y, p) == pytest.approx(sklearn_metrics.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))
    m = binary_metrics(y, p)
    top = np.argsort(-p, kind="stable")[:50]
    assert m["precision_at_top_decile"] == pytest.approx(y[top].mean())
    assert m["base_rate"] == pytest.approx(y.mean()) and m["rows"] == 500
    assert math.isnan(roc_auc(np.ones(3, bool), np.ones(3)))
