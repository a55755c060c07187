"""scikit-learn models saved with skops (``.skops``), which loads only trusted types.

A pickle (``.pkl``, ``.pickle``, ``.joblib``) can run any code when loaded:
it is refused unless the scorer says ``allow_pickle: true``. Needs the
``sklearn`` extra (``pip install 'ceap[sklearn]'``).
"""

from __future__ import annotations

import pickle
from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from ceap.errors import SourceError
from ceap.ml.deps import require
from ceap.ml.explain import top_contributions
from ceap.scorers.base import ScorerConfig, feature_matrix
from ceap.scorers.model_file import ModelFileConfig, ModelFileScorer

#: types skops does not trust on its own that CEAP does: the tree structures of
#: scikit-learn's own tree ensembles (plain data, no code)
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class SklearnConfig(ModelFileConfig):
    type: Literal["sklearn"] = "sklearn"
    trusted: list[str] = Field(default_factory=list,
                               description="more types to trust when loading the skops file")
    allow_pickle: bool = Field(False, description="load a pickle or joblib file (it can run code)")
    positive_class: int | str | bool = Field(1, description="the class whose probability is the score")


def load_sklearn(path: Any, config: SklearnConfig) -> Any:
    """Load a skops file with the trusted types only, or a pickle when allowed."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not config.allow_pickle:
            raise SourceError(f"scorer.allow_pickle: {config.model!r} is a pickle, which can run "
                              "code when loaded; save the model with skops (.skops), or set "
                              "allow_pickle: true if you trust the file")
        if suffix == ".joblib":
            return require("joblib", "loading a joblib file").load(path)
        with open(path, "rb") as fh:
            return pickle.load(fh)
    if suffix != ".skops":
        raise SourceError(f"scorer.model: {config.model!r} is not a .skops file "
                          "(or a pickle with allow_pickle: true)")
    sio = require("skops.io", "the sklearn scorer")
    try:
        found = sio.get_untrusted_types(file=path)
        allowed = set(TRUSTED_TYPES) | set(config.trusted)
        refused = sorted(t for t in found if t not in allowed)
        if refused:
            raise SourceError(f"scorer.trusted: {config.model!r} holds types that are not "
                              f"trusted: {', '.join(refused)}; list them under trusted if you "
                              "trust the file")
        return sio.load(path, trusted=[t for t in found if t in allowed])
    except SourceError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"scorer.model: cannot load {config.model!r}: {first}") from None


class SklearnScorer(ModelFileScorer[SklearnConfig]):
    """Scores a batch with one ``predict_proba`` call on the feature matrix.

    Reasons: for a linear model (or a pipeline ending in one whose steps keep
    the columns), coefficient times transformed value per feature; trees give
    none (no contributions without the shap package).
    """

    config_model: ClassVar[type[ScorerConfig]] = SklearnConfig
    artefact_kinds: ClassVar[tuple[str, ...]] = ("sklearn",)

    @cached_property
    def estimator(self) -> Any:
        require("sklearn", "the sklearn scorer")
        return load_sklearn(self.path, self.config)

    def model_features(self) -> list[str] | None:
        names = getattr(self.estimator, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else None

    @cached_property
    def _positive(self) -> int:
        classes = list(getattr(self.estimator, "classes_", [0, 1]))
        wanted = self.config.positive_class
        if wanted in classes:
            return classes.index(wanted)
        raise SourceError(f"scorer.positive_class: {wanted!r} is not one of the model's classes "
                          f"({', '.join(map(str, classes))})")

    def score(self, table: pa.Table) -> np.ndarray:
        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        matrix = feature_matrix(table, self.features())
        if hasattr(self.estimator, "predict_proba"):
            return np.asarray(self.estimator.predict_proba(matrix)[:, self._positive], dtype=np.float64)
        return np.asarray(self.estimator.predict(matrix), dtype=np.float64).reshape(-1)

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]] | None:
        model, matrix = self.estimator, feature_matrix(table, self.features())
        steps = getattr(model, "steps", None)
        if steps:  # a Pipeline: transform through all but the last step
            for _, step in steps[:-1]:
                if step in (None, "passthrough"):
                    continue
                matrix = step.transform(matrix)
            model = steps[-1][1]
        coef = getattr(model, "coef_", None)
        if coef is None or np.ndim(coef) != 2 or coef.shape[0] != 1 \
                or coef.shape[1] != len(self.features()) or np.ndim(matrix) != 2:
            return None
        sign = 1.0 if self._positive == 1 else -1.0
        return top_contributions(sign * np.asarray(matrix) * coef[0], self.features(), top)
