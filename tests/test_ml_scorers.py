"""The model scorers over registry artefacts: conformance, agreement with their libraries,
single-event scoring, reasons, pickle opt-in, online learning and a run end to end."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ceap.errors import SourceError
from ceap.ml.artefacts import ModelRegistry
from ceap.ml.deps import MissingDependency
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.registry import default_registry
from ceap.runtime import run_program
from ceap.scorers.base import feature_matrix
from ceap.scorers.expression import ExpressionScorer
from ceap.scorers.lightgbm import LightGBMScorer
from ceap.scorers.onnx import OnnxScorer
from ceap.scorers.river import RiverScorer
from ceap.scorers.sklearn import SklearnScorer
from ceap.scorers.xgboost import XGBoostScorer
from ceap.spec import parse_program
from ceap.store import open_store
from ceap.testing import check_registration, check_scorer
from tests.ml_helpers import FEATURES, churn_table, train_kind

xgb = pytest.importorskip("xgboost")
sio = pytest.importorskip("skops.io")
river = pytest.importorskip("river")

#: scorer type -> (scorer class, ``ceap train --kind``, extra config)
KINDS: dict[str, tuple[type[Any], str, dict[str, Any]]] = {
    "lightgbm": (LightGBMScorer, "lightgbm", {}),
    "xgboost": (XGBoostScorer, "xgboost", {}),
    "sklearn": (SklearnScorer, "sklearn", {}),
    "onnx": (OnnxScorer, "onnx-from-lightgbm", {}),
    "river": (RiverScorer, "river", {"allow_pickle": True}),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("project")
    for kind, (_, train_as, _) in KINDS.items():
        train_kind(base / "models", train_as, name=f"m_{kind}")
    return base


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    table = churn_table(40, seed=11)
    # a missing value in a feature: every scorer must still give one score per row
    recency = table.column("recency").to_pylist()
    recency[5] = None
    return table.set_column(1, "recency", pa.array(recency, pa.float64()))


def make(project: Path, kind: str, **extra: Any) -> Any:
    cls, _, config = KINDS[kind]
    return cls.from_dict({"type": kind, "model": f"m_{kind}@latest", **config, **extra},
                         PluginContext(base_dir=project))


@pytest.mark.parametrize("kind", list(KINDS))
def test_model_scorers_pass_the_conformance_suite(project: Path, sample: pa.Table, kind: str) -> None:
    cls, _, config = KINDS[kind]
    check_registration("scorer", kind, cls)
    assert default_registry().get("scorer", kind) is cls
    check_scorer(cls, {"type": kind, "model": f"m_{kind}", **config}, PluginContext(base_dir=project),
                 sample)


def _direct(project: Path, kind: str, matrix: np.ndarray) -> np.ndarray:
    """The same model's scores through its own library, without CEAP."""
    folder = ModelRegistry(project / "models").resolve(f"m_{kind}").folder
    if kind == "lightgbm":
        return lgb.Booster(model_file=str(folder / "model.txt")).predict(matrix)
    if kind == "xgboost":
        return xgb.Booster(model_file=str(folder / "model.json")).inplace_predict(matrix)
    if kind == "sklearn":
        found = sio.get_untrusted_types(file=folder / "model.skops")
        return sio.load(folder / "model.skops", trusted=found).predict_proba(matrix)[:, 1]
    if kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"input": matrix.astype(np.float32)})[0][:, 1]
    with open(folder / "model.pkl", "rb") as fh:
        model = pickle.load(fh)
    return np.array([model.predict_proba_one({f: v for f, v in zip(FEATURES, row, strict=True)
                                              if not np.isnan(v)})[True] for row in matrix])


@pytest.mark.parametrize("kind", list(KINDS))
def test_scores_equal_the_library_and_score_one_equals_score(project: Path, sample: pa.Table,
                                                             kind: str) -> None:
    scorer = make(project, kind)
    assert scorer.model_id() == f"m_{kind}@1" and scorer.features() == FEATURES
    scores = scorer.score(sample)
    assert np.allclose(scores, _direct(project, kind, feature_matrix(sample, FEATURES)), rtol=1e-6)
    for i, row in enumerate(sample.to_pylist()[:8]):
        assert scorer.score_one(row) == pytest.approx(scores[i], rel=1e-6, abs=1e-9)
    with pytest.raises(SourceError, match="scorer needs column"):
        scorer.score_one({"recency": 1.0})


def test_the_default_score_one_builds_a_one_row_table() -> None:
    scorer = ExpressionScorer.from_dict({"type": "expression", "weights": {"a": 1.0, "b": -2.0}})
    table = pa.table({"a": [0.5, 2.0], "b": [1.0, None]})
    assert scorer.score_one({"a": 0.5, "b": 1.0}) == pytest.approx(scorer.score(table)[0])
    assert np.isnan(scorer.score_one({"a": 2.0, "b": None}))


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_reasons_are_the_largest_contributions_and_add_up_to_the_margin(
        project: Path, sample: pa.Table, kind: str) -> None:
    scorer = make(project, kind)
    matrix = feature_matrix(sample, FEATURES)
    if kind == "lightgbm":
        contrib = scorer.booster.predict(matrix, pred_contrib=True)
        margin = scorer.booster.predict(matrix, raw_score=True)
    else:
        data = xgb.DMatrix(matrix, feature_names=FEATURES)
        contrib = scorer.booster.predict(data, pred_contribs=True)
        margin = scorer.booster.predict(data, output_margin=True)
    assert np.allclose(contrib.sum(axis=1), margin, atol=1e-4)  # features + bias = raw margin
    reasons = scorer.explain(sample, 2)
    assert len(reasons) == sample.num_rows
    for i, top in enumerate(reasons):
        order = np.argsort(-np.abs(contrib[i, :-1]), kind="stable")[:2]
        assert list(top) == [FEATURES[j] for j in order]
        assert list(top.values()) == pytest.approx([contrib[i, j] for j in order], rel=1e-5)
    everything = scorer.explain(sample, 10)
    assert [sum(r.values()) + contrib[i, -1] for i, r in enumerate(everything)] == \
        pytest.approx(margin, abs=1e-4)


def test_other_scorers_explain_or_say_they_cannot(project: Path, sample: pa.Table) -> None:
    onnx_reasons = make(project, "onnx").explain(sample, 2)  # from the LightGBM model beside it
    assert onnx_reasons is not None and all(1 <= len(r) <= 2 for r in onnx_reasons)
    assert make(project, "sklearn").explain(sample, 2) is None  # a tree ensemble: no reasons
    river_reasons = make(project, "river").explain(sample, 1)  # a linear model: weight x value
    assert river_reasons is not None and all(len(r) == 1 for r in river_reasons)


def test_a_linear_sklearn_pipeline_explains_with_coefficients(tmp_path: Path, sample: pa.Table) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = churn_table(500)
    x = feature_matrix(table, FEATURES)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, table.column("churned"))
    sio.dump(model, tmp_path / "linear.skops")
    scorer = SklearnScorer.from_dict({"type": "sklearn", "model": "linear.skops", "features": FEATURES},
                                     PluginContext(base_dir=tmp_path))
    full = sample.filter(pa.array([v is not None for v in sample.column("recency").to_pylist()]))
    reasons = scorer.explain(full, 3)
    scaled = model[:-1].transform(feature_matrix(full, FEATURES))
    expected = scaled * model[-1].coef_[0]
    for i, r in enumerate(reasons[:5]):
        assert r == pytest.approx({f: expected[i, j] for j, f in enumerate(FEATURES)})
    assert sum(reasons[0].values()) + model[-1].intercept_[0] == \
        pytest.approx(model.decision_function(feature_matrix(full, FEATURES))[0])


def test_a_pickle_loads_only_with_the_opt_in(tmp_path: Path, sample: pa.Table) -> None:
    from sklearn.linear_model import LogisticRegression

    table = churn_table(300)
    model = LogisticRegression().fit(feature_matrix(table, FEATURES), table.column("churned"))
    with open(tmp_path / "model.pkl", "wb") as fh:
        pickle.dump(model, fh)
    context = PluginContext(base_dir=tmp_path)
    config = {"type": "sklearn", "model": "model.pkl", "features": FEATURES}
    with pytest.raises(SourceError, match="scorer.allow_pickle: 'model.pkl' is a pickle, which can "
                                          "run code when loaded"):
        SklearnScorer.from_dict(config, context).score(table)
    allowed = SklearnScorer.from_dict({**config, "allow_pickle": True}, context)
    assert allowed.score(table) == pytest.approx(model.predict_proba(feature_matrix(table, FEATURES))[:, 1])
    with pytest.raises(SourceError, match="scorer.allow_pickle: River models are stored as pickles"):
        RiverScorer.from_dict({"type": "river", "model": "model.pkl", "features": FEATURES},
                              context).score(table)


def test_skops_loads_only_trusted_types(project: Path, sample: pa.Table,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ceap.scorers.sklearn.TRUSTED_TYPES", ())
    with pytest.raises(SourceError, match=r"scorer.trusted: .* holds types that are not trusted: "
                                          r"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"):
        make(project, "sklearn").score(sample)
    trusted = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
    assert make(project, "sklearn", trusted=trusted).score(sample).shape == (sample.num_rows,)


def test_a_missing_library_names_the_install_line(project: Path, sample: pa.Table,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, *args: Any) -> Any:
        if name.split(".")[0] in ("xgboost", "river"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingDependency, match=r"run: pip install 'ceap\[xgboost\]'"):
        make(project, "xgboost").score(sample)
    with pytest.raises(MissingDependency, match=r"run: pip install 'ceap\[online\]'"):
        make(project, "river").score(sample)


def test_a_reference_to_another_kind_or_other_features_is_refused(project: Path) -> None:
    context = PluginContext(base_dir=project)
    wrong = LightGBMScorer.from_dict({"type": "lightgbm", "model": "m_xgboost@1"}, context)
    with pytest.raises(SourceError, match="m_xgboost@1 is a xgboost model.*use type: xgboost"):
        wrong.features()
    swapped = LightGBMScorer.from_dict({"type": "lightgbm", "model": "m_lightgbm",
                                        "features": ["orders", "recency", "spend"]}, context)
    with pytest.raises(SourceError, match="scorer.features: model m_lightgbm@1 was trained on "
                                          "recency, orders, spend"):
        swapped.features()
    with pytest.raises(ValueError, match="name and version come from the registry"):
        LightGBMScorer.from_dict({"type": "lightgbm", "model": "m_lightgbm@1", "version": "9"})
    with pytest.raises(ValueError, match="an ONNX model file does not name its inputs"):
        OnnxScorer.from_dict({"type": "onnx", "model": "model.onnx"})


def test_a_model_file_path_still_works(project: Path, sample: pa.Table) -> None:
    folder = ModelRegistry(project / "models").resolve("m_lightgbm@1").folder
    scorer = LightGBMScorer.from_dict({"type": "lightgbm", "model": str(folder / "model.txt")})
    assert scorer.model_id().startswith("model@") and scorer.features() == FEATURES
    assert np.allclose(scorer.score(sample), make(project, "lightgbm").score(sample))
    named = LightGBMScorer.from_dict({"type": "lightgbm", "model": str(folder / "model.txt"),
                                      "name": "churn", "version": "7"})
    assert named.model_id() == "churn@7"


def test_river_learns_from_outcomes_and_saves_a_new_version(tmp_path: Path) -> None:
    root = tmp_path / "models"
    train_kind(root, "river", name="online", table=churn_table(600))
    context = PluginContext(base_dir=tmp_path)
    scorer = RiverScorer.from_dict({"type": "river", "model": "online", "allow_pickle": True}, context)
    outcomes = churn_table(400, seed=99)
    before = scorer.score(outcomes)
    progressive = scorer.learn(outcomes, outcomes.column("churned"))
    assert progressive[0] == pytest.approx(before[0])  # each row scored before it was learned
    assert not np.allclose(scorer.score(outcomes), before)
    assert scorer.model_id() == "online@1+400"
    artefact = scorer.save()
    assert artefact.meta.ref == "online@2" and artefact.meta.parent == "online@1"
    assert artefact.meta.split["method"] == "progressive" and artefact.meta.metrics["rows"] == 400
    assert artefact.meta.fingerprint is not None and artefact.meta.fingerprint.rows == 400
    assert scorer.model_id() == "online@2"
    reloaded = RiverScorer.from_dict({"type": "river", "model": "online@latest", "allow_pickle": True},
                                     context)
    assert np.allclose(reloaded.score(outcomes), scorer.score(outcomes))
    with pytest.raises(SourceError, match="learn: labels must be true/false or 0/1"):
        scorer.learn(outcomes.slice(0, 2), [0, 2])


def test_candidates_keep_the_model_version_and_its_reasons(project: Path, tmp_path: Path) -> None:
    pq.write_table(churn_table(200, seed=5), project / "customers.parquet")
    spec = parse_program({
        "name": "churn_save",
        "source": {"type": "parquet", "path": "customers.parquet"},
        "scorer": {"type": "lightgbm", "model": "m_lightgbm@latest"},
        "selection": {"top_k": 5, "reasons": 2},
        "action": {"type": "offer", "channels": ["email"]},
    })
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    try:
        run_program(spec, store, PluginContext(base_dir=project))
        found = store.candidates(CandidateQuery(limit=100, include_expired=True))
    finally:
        store.close()
    assert len(found) == 5
    for c in found:
        assert c.model == "m_lightgbm@1"
        assert len(c.reasons) == 2 and set(c.reasons) <= set(FEATURES)
