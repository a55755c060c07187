"""LightGBM models saved in LightGBM's text format (which cannot run code)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ceap.errors import SourceError
from ceap.ml.explain import top_contributions
from ceap.scorers.base import ScorerConfig, feature_matrix
from ceap.scorers.model_file import ModelFileConfig, ModelFileScorer

if TYPE_CHECKING:  # LightGBM (and the scikit-learn and SciPy it loads) only when a model loads;
    import lightgbm as lgb  # NumPy and Arrow when rows are scored (validating imports neither)
    import numpy as np
    import pyarrow as pa


class LightGBMConfig(ModelFileConfig):
    type: Literal["lightgbm"] = "lightgbm"
    num_threads: int = Field(0, ge=0, description="0: LightGBM's default (all cores)")


def load_booster(path: str, label: str) -> lgb.Booster:
    import lightgbm as lgb

    try:
        return lgb.Booster(model_file=path)
    except lgb.basic.LightGBMError as exc:
        raise SourceError(f"scorer.model: cannot load LightGBM model {label!r}: {exc}") from None


def lightgbm_reasons(booster: lgb.Booster, matrix: np.ndarray, features: list[str],
                     top: int) -> list[dict[str, float]]:
    """Top |contribution| features per row, from ``pred_contrib`` (TreeSHAP; last column: bias)."""
    import numpy as np

    if matrix.shape[0] == 0:
        return []
    contrib = np.asarray(booster.predict(matrix, pred_contrib=True), dtype=np.float64)
    return top_contributions(contrib[:, :-1], features, top)


class LightGBMScorer(ModelFileScorer[LightGBMConfig]):
    """Scores a batch with one ``Booster.predict`` call; the model loads once.

    Reasons are LightGBM's per-feature contributions (``pred_contrib``): with
    the bias they add up to the raw score (log-odds) of the row.
    """

    config_model: ClassVar[type[ScorerConfig]] = LightGBMConfig
    artefact_kinds: ClassVar[tuple[str, ...]] = ("lightgbm",)

    @cached_property
    def booster(self) -> lgb.Booster:
        return load_booster(str(self.path), self.config.model)

    @cached_property
    def _params(self) -> dict[str, Any]:
        return {"num_threads": self.config.num_threads} if self.config.num_threads else {}

    def model_features(self) -> list[str] | None:
        return list(self.booster.feature_name())

    def score(self, table: pa.Table) -> np.ndarray:
        import numpy as np

        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        matrix = feature_matrix(table, self.features())
        return np.asarray(self.booster.predict(matrix, **self._params), dtype=np.float64)

    def score_one(self, row: Mapping[str, Any]) -> float:
        # one thread: waking a pool costs more than one row's trees
        return float(self.booster.predict(self._one_row(row), num_threads=1)[0])

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]] | None:
        return lightgbm_reasons(self.booster, feature_matrix(table, self.features()),
                                self.features(), top)
