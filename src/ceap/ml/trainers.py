"""One trainer per model kind: fit on a matrix, write the model file, predict held-out rows."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from ceap.ml.deps import require

#: ``ceap train --kind`` values
KINDS = ("lightgbm", "xgboost", "sklearn", "onnx-from-lightgbm", "river")


@dataclass(frozen=True)
class TrainParams:
    trees: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    seed: int = 7


@dataclass
class Fitted:
    """A trained model whose file sits in the staging folder."""

    kind: str  # the artefact kind (the scorer type that loads it)
    file: str
    predict: Callable[[np.ndarray], np.ndarray]
    params: dict[str, Any]
    libraries: tuple[str, ...]
    explainer: str | None = None
    extra_files: list[str] = field(default_factory=list)


def _lightgbm(x: np.ndarray, y: np.ndarray, features: list[str], p: TrainParams) -> lgb.Booster:
    params = {"objective": "binary", "learning_rate": p.learning_rate, "num_leaves": p.num_leaves,
              "seed": p.seed, "deterministic": True, "verbose": -1}
    data = lgb.Dataset(x, label=y.astype(np.float64), feature_name=features, free_raw_data=True)
    return lgb.train(params, data, num_boost_round=p.trees)


def fit_lightgbm(x: np.ndarray, y: np.ndarray, features: list[str], p: TrainParams,
                 folder: Path) -> Fitted:
    booster = _lightgbm(x, y, features, p)
    booster.save_model(str(folder / "model.txt"))
    return Fitted("lightgbm", "model.txt", lambda m: np.asarray(booster.predict(m)),
                  {"objective": "binary", "trees": p.trees, "learning_rate": p.learning_rate,
                   "num_leaves": p.num_leaves, "seed": p.seed}, ("lightgbm",))


def fit_xgboost(x: np.ndarray, y: np.ndarray, features: list[str], p: TrainParams,
                folder: Path) -> Fitted:
    xgb = require("xgboost", "training an xgboost model")
    params = {"objective": "binary:logistic", "eta": p.learning_rate, "max_depth": 6,
              "tree_method": "hist", "seed": p.seed}
    booster = xgb.train(params, xgb.DMatrix(x, label=y.astype(np.float64), feature_names=features),
                        num_boost_round=p.trees)
    booster.save_model(str(folder / "model.json"))
    return Fitted("xgboost", "model.json", lambda m: np.asarray(booster.inplace_predict(m)),
                  {**params, "trees": p.trees}, ("xgboost",))


def fit_sklearn(x: np.ndarray, y: np.ndarray, features: list[str], p: TrainParams,
                folder: Path) -> Fitted:
    ensemble = require("sklearn.ensemble", "training a scikit-learn model")
    sio = require("skops.io", "saving a scikit-learn model")
    model = ensemble.HistGradientBoostingClassifier(
        max_iter=p.trees, learning_rate=p.learning_rate, max_leaf_nodes=p.num_leaves,
        random_state=p.seed, early_stopping=False)
    model.fit(x, y.astype(np.int64))
    sio.dump(model, folder / "model.skops")
    return Fitted("sklearn", "model.skops", lambda m: np.asarray(model.predict_proba(m)[:, 1]),
                  {"estimator": "HistGradientBoostingClassifier", "trees": p.trees,
                   "learning_rate": p.learning_rate, "max_leaf_nodes": p.num_leaves,
                   "seed": p.seed}, ("sklearn", "skops"))


def fit_onnx_from_lightgbm(x: np.ndarray, y: np.ndarray, features: list[str], p: TrainParams,
                           folder: Path) -> Fitted:
    onnxmltools = require("onnxmltools", "converting a LightGBM model to ONNX")
    types = require("onnxmltools.convert.common.data_types", "converting to ONNX")
    import onnxruntime as ort

    booster = _lightgbm(x, y, features, p)
    booster.save_model(str(folder / "model.txt"))
    onx = onnxmltools.convert_lightgbm(
        booster, initial_types=[("input", types.FloatTensorType([None, len(features)]))],
        zipmap=False)
    (folder / "model.onnx").write_bytes(onx.SerializeToString())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])

    def predict(m: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["probabilities"], {"input": m.astype(np.float32)})[0])[:, 1]

    return Fitted("onnx", "model.onnx", predict,
                  {"converted_from": "lightgbm", "trees": p.trees, "learning_rate": p.learning_rate,
                   "num_leaves": p.num_leaves, "seed": p.seed},
                  ("lightgbm", "onnxmltools", "onnx", "onnxruntime"), explainer="model.txt")


def _rows(m: np.ndarray, features: list[str]) -> list[dict[str, float]]:
    return [{f: float(v) for f, v in zip(features, row, strict=True) if not math.isnan(v)}
            for row in m]


def fit_river(x: np.ndarray, y: np.ndarray, features: list[str], p: TrainParams,
              folder: Path) -> Fitted:
    require("river", "training a river model")
    from river import compose, linear_model, optim, preprocessing

    model = compose.Pipeline(preprocessing.StandardScaler(),
                             linear_model.LogisticRegression(optimizer=optim.SGD(p.learning_rate)))
    for row, label in zip(_rows(x, features), y, strict=True):
        model.learn_one(row, bool(label))
    with open(folder / "model.pkl", "wb") as fh:
        pickle.dump(model, fh)

    def predict(m: np.ndarray) -> np.ndarray:
        return np.array([model.predict_proba_one(r).get(True, 0.0) for r in _rows(m, features)])

    return Fitted("river", "model.pkl", predict,
                  {"pipeline": "StandardScaler | LogisticRegression", "optimizer": "SGD",
                   "learning_rate": p.learning_rate}, ("river",))


TRAINERS: dict[str, Callable[[np.ndarray, np.ndarray, list[str], TrainParams, Path], Fitted]] = {
    "lightgbm": fit_lightgbm,
    "xgboost": fit_xgboost,
    "sklearn": fit_sklearn,
    "onnx-from-lightgbm": fit_onnx_from_lightgbm,
    "river": fit_river,
}
