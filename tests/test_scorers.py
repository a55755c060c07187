"""The built-in scorers: SQL expressions and weighted logistics, LightGBM text
models and ONNX models, checked against the libraries that trained them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from ceap.errors import SourceError
from ceap.plugin import PluginContext
from ceap.scorers.expression import ExpressionScorer
from ceap.scorers.lightgbm import LightGBMScorer
from ceap.scorers.onnx import OnnxScorer

FEATURES = ["tenure", "spend", "visits"]


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    x = np.column_stack([rng.integers(0, 60, 400), rng.gamma(2.0, 30.0, 400), rng.poisson(4, 400)])
    logit = -0.05 * x[:, 0] + 0.02 * x[:, 1] + 0.3 * x[:, 2] - 1.5
    y = (rng.random(400) < 1 / (1 + np.exp(-logit))).astype(int)
    return x.astype(np.float64), y


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory,
           training: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = training
    root = tmp_path_factory.mktemp("models")
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15},
                        lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=20)
    booster.save_model(str(root / "churn.txt"))
    sklearn_models = {"lr": LogisticRegression(max_iter=1000).fit(x.astype(np.float32), y),
                      "gb": GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0)
                      .fit(x.astype(np.float32), y)}
    for name, model in sklearn_models.items():
        onnx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 3]))],
                               options={id(model): {"zipmap": False}}, target_opset=17)
        (root / f"{name}.onnx").write_bytes(onnx.SerializeToString())
    gbm = convert_lightgbm(booster, initial_types=[("input", MlFloat([None, 3]))], zipmap=False,
                           target_opset=15)
    (root / "gbm.onnx").write_bytes(gbm.SerializeToString())
    return {"root": root, "booster": booster, **sklearn_models}


@pytest.fixture
def context(models: dict[str, Any]) -> PluginContext:
    return PluginContext(base_dir=models["root"])


def table_of(x: np.ndarray, names: list[str] = FEATURES, **extra: Any) -> pa.Table:
    return pa.table({**{n: x[:, j] for j, n in enumerate(names)}, **extra})


def sample(n: int = 50, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, 60, n), rng.gamma(2.0, 30.0, n), rng.poisson(4, n)]).astype(float)


# -- expression ---------------------------------------------------------------------------


def test_expression_scorer_expr_form() -> None:
    x = sample()
    scorer = ExpressionScorer.from_dict({"type": "expression", "expr": "spend / 100 + visits * 2 - tenure"})
    np.testing.assert_allclose(scorer.score(table_of(x)), x[:, 1] / 100 + x[:, 2] * 2 - x[:, 0], rtol=1e-12)
    assert scorer.model_id() == "expression"
    assert scorer.score(table_of(x[:0])).shape == (0,)


def test_expression_scorer_weights_are_a_logistic() -> None:
    x = sample()
    weights = {"tenure": -0.05, "spend": 0.02, "visits": 0.3}
    config = {"type": "expression", "weights": weights, "bias": -1.5, "name": "handmade"}
    scores = ExpressionScorer.from_dict(config).score(table_of(x))
    z = x @ np.array(list(weights.values())) - 1.5
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-z)), rtol=1e-12)
    assert scores.dtype == np.float64
    identity = ExpressionScorer.from_dict({**config, "link": "identity"})
    np.testing.assert_allclose(identity.score(table_of(x)), z, rtol=1e-12)
    assert identity.model_id() == "handmade"
    assert identity.features() == FEATURES


def test_expression_scorer_reads_weights_by_name_not_position() -> None:
    x = sample(5)
    scorer = ExpressionScorer.from_dict({"type": "expression", "weights": {"visits": 1.0},
                                         "link": "identity"})
    shuffled = pa.table({"visits": x[:, 2], "tenure": x[:, 0]})
    np.testing.assert_array_equal(scorer.score(shuffled), x[:, 2])


def test_expression_scorer_nulls_give_nan() -> None:
    table = pa.table({"tenure": pa.array([1.0, None, 3.0]), "spend": [1.0, 2.0, 3.0],
                      "visits": pa.array([1, 2, None], pa.int64())})
    weighted = ExpressionScorer.from_dict({"type": "expression",
                                           "weights": {"tenure": 1.0, "visits": 1.0}, "link": "identity"})
    np.testing.assert_array_equal(weighted.score(table), [2.0, np.nan, np.nan])
    expr = ExpressionScorer.from_dict({"type": "expression", "expr": "tenure + spend"})
    np.testing.assert_array_equal(expr.score(table), [2.0, np.nan, 6.0])


def test_expression_scorer_non_numeric_feature_is_named() -> None:
    scorer = ExpressionScorer.from_dict({"type": "expression", "weights": {"country": 1.0}})
    with pytest.raises(SourceError, match=r"feature 'country' has type string"):
        scorer.score(pa.table({"country": ["US", "FR"]}))
    with pytest.raises(SourceError, match="visits"):
        ExpressionScorer.from_dict({"type": "expression", "weights": {"visits": 1.0}}).score(
            pa.table({"spend": [1.0]}))


@pytest.mark.parametrize(("config", "message"), [
    ({}, "exactly one of 'expr' and 'weights'"),
    ({"expr": "spend", "weights": {"spend": 1.0}}, "exactly one of 'expr' and 'weights'"),
    ({"weights": {}}, "weights is empty"),
    ({"expr": "spend +"}, "invalid SQL expression"),
    ({"expr": "1; DROP TABLE x"}, "invalid SQL expression"),
    ({"expr": "spend", "link": "probit"}, "link"),
    ({"expr": "spend", "wieghts": {}}, "wieghts"),
])
def test_expression_scorer_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ExpressionScorer.config_model.model_validate({"type": "expression", **config})


# -- LightGBM -----------------------------------------------------------------------------


def test_lightgbm_equals_booster_predict(models: dict[str, Any], context: PluginContext) -> None:
    x = sample(200)
    scorer = LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt"}, context)
    assert scorer.features() == FEATURES
    scores = scorer.score(table_of(x, customer_id=[f"c{i}" for i in range(200)]))
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, models["booster"].predict(x))
    assert 0 < scores.min() < scores.max() < 1


def test_lightgbm_maps_program_columns_to_model_features(models: dict[str, Any],
                                                         context: PluginContext) -> None:
    x = sample(20)
    config = {"type": "lightgbm", "model": "churn.txt", "features": ["months", "amount", "sessions"],
              "num_threads": 1}
    scorer = LightGBMScorer.from_dict(config, context)
    renamed = table_of(x, names=["months", "amount", "sessions"])
    np.testing.assert_array_equal(scorer.score(renamed), models["booster"].predict(x))
    wrong = LightGBMScorer.from_dict({**config, "features": ["months", "amount"]}, context)
    with pytest.raises(SourceError, match=r"the model takes 3 features \(tenure, spend, visits\)"):
        wrong.score(renamed)


def test_lightgbm_null_features_are_missing_values(models: dict[str, Any], context: PluginContext) -> None:
    x = sample(10)
    x[3, 1] = np.nan
    table = pa.table({"tenure": x[:, 0], "spend": pa.array([None if np.isnan(v) else v for v in x[:, 1]]),
                      "visits": pa.array(x[:, 2].astype(np.int64))})
    scores = LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt"}, context).score(table)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, models["booster"].predict(x))


def test_lightgbm_bool_and_int_features_are_numbers(models: dict[str, Any], context: PluginContext) -> None:
    table = pa.table({"tenure": pa.array([1, 2], pa.int32()), "spend": pa.array([True, False]),
                      "visits": pa.array([3, 4], pa.uint8())})
    scores = LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt"}, context).score(table)
    np.testing.assert_array_equal(scores, models["booster"].predict(np.array([[1, 1, 3], [2, 0, 4]], float)))


def test_lightgbm_non_numeric_feature_is_named(context: PluginContext) -> None:
    table = table_of(sample(3)).set_column(1, "spend", pa.array(["1", "2", "3"]))
    with pytest.raises(SourceError, match=r"feature 'spend' has type string"):
        LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt"}, context).score(table)


def test_lightgbm_model_id_has_a_version(context: PluginContext, tmp_path: Path) -> None:
    scorer = LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt"}, context)
    assert re.fullmatch(r"churn@[0-9a-f]{12}", scorer.model_id())
    named = LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt", "name": "churn-gbm",
                                      "version": "2024-05"}, context)
    assert named.model_id() == "churn-gbm@2024-05"
    x, y = sample(100), np.arange(100) % 2
    other = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y, feature_name=FEATURES), 3)
    other.save_model(str(tmp_path / "churn.txt"))
    retrained = LightGBMScorer.from_dict({"type": "lightgbm", "model": "churn.txt"},
                                         PluginContext(base_dir=tmp_path))
    assert retrained.model_id().startswith("churn@")
    assert retrained.model_id() != scorer.model_id()


def test_lightgbm_missing_and_corrupt_models(tmp_path: Path) -> None:
    context = PluginContext(base_dir=tmp_path)
    with pytest.raises(SourceError, match=r"model file 'models/nope\.txt' not found") as info:
        LightGBMScorer.from_dict({"type": "lightgbm", "model": "models/nope.txt"}, context).score(
            table_of(sample(2)))
    assert str(tmp_path) in str(info.value)
    (tmp_path / "bad.txt").write_text("not a model\n")
    with pytest.raises(SourceError, match=r"cannot load LightGBM model 'bad\.txt'"):
        LightGBMScorer.from_dict({"type": "lightgbm", "model": "bad.txt"}, context).score(table_of(sample(2)))


# -- ONNX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr", "gb"])
def test_onnx_equals_sklearn_predict_proba(name: str, models: dict[str, Any], context: PluginContext) -> None:
    x = sample(300)
    scorer = OnnxScorer.from_dict({"type": "onnx", "model": f"{name}.onnx", "features": FEATURES}, context)
    scores = scorer.score(table_of(x))
    assert scores.dtype == np.float64
    expected = models[name].predict_proba(x.astype(np.float32))[:, 1]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    negative = OnnxScorer.from_dict({"type": "onnx", "model": f"{name}.onnx", "features": FEATURES,
                                     "positive_class": 0}, context)
    np.testing.assert_allclose(negative.score(table_of(x)), 1 - expected, atol=1e-5)


def test_onnx_from_lightgbm_equals_booster(models: dict[str, Any], context: PluginContext) -> None:
    x = sample(300)
    scorer = OnnxScorer.from_dict({"type": "onnx", "model": "gbm.onnx", "features": FEATURES}, context)
    np.testing.assert_allclose(scorer.score(table_of(x)), models["booster"].predict(x), atol=1e-5)


def test_onnx_outputs(models: dict[str, Any], context: PluginContext) -> None:
    x = sample(20)
    labels = OnnxScorer.from_dict({"type": "onnx", "model": "lr.onnx", "features": FEATURES,
                                   "output": "label"}, context).score(table_of(x))
    np.testing.assert_array_equal(labels, models["lr"].predict(x.astype(np.float32)))
    with pytest.raises(SourceError, match=r"no output 'proba' \(outputs: label, probabilities\)"):
        OnnxScorer.from_dict({"type": "onnx", "model": "lr.onnx", "features": FEATURES, "output": "proba"},
                             context).score(table_of(x))


def test_onnx_model_id_and_errors(context: PluginContext) -> None:
    scorer = OnnxScorer.from_dict({"type": "onnx", "model": "lr.onnx", "features": FEATURES}, context)
    assert re.fullmatch(r"lr@[0-9a-f]{12}", scorer.model_id())
    assert scorer.score(table_of(sample(0))).shape == (0,)
    with pytest.raises(ValidationError, match="features"):
        OnnxScorer.config_model.model_validate({"type": "onnx", "model": "lr.onnx"})
    with pytest.raises(SourceError, match=r"model file 'gone\.onnx' not found"):
        OnnxScorer.from_dict({"type": "onnx", "model": "gone.onnx", "features": FEATURES}, context).score(
            table_of(sample(2)))
    table = table_of(sample(3)).set_column(2, "visits", pa.array(["a", "b", "c"]))
    with pytest.raises(SourceError, match=r"feature 'visits' has type string"):
        scorer.score(table)


def test_onnx_corrupt_model(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    scorer = OnnxScorer.from_dict({"type": "onnx", "model": "bad.onnx", "features": FEATURES},
                                  PluginContext(base_dir=tmp_path))
    with pytest.raises(SourceError, match=r"cannot load ONNX model 'bad\.onnx'"):
        scorer.score(table_of(sample(2)))


def test_onnx_null_features_give_nan_only_for_their_rows(models: dict[str, Any],
                                                         context: PluginContext) -> None:
    x = sample(6)
    spend = pa.array([None if i == 2 else v for i, v in enumerate(x[:, 1])])
    table = table_of(x).set_column(1, "spend", spend)
    scores = OnnxScorer.from_dict({"type": "onnx", "model": "lr.onnx", "features": FEATURES},
                                  context).score(table)
    assert np.isnan(scores[2])
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(scores[keep], models["lr"].predict_proba(x[keep].astype(np.float32))[:, 1],
                               atol=1e-5)
