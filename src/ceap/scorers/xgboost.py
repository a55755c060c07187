"""XGBoost models saved as JSON or UBJSON (formats that hold no code).

Needs the ``xgboost`` extra (``pip install 'ceap[xgboost]'``, the CPU-only wheel).
"""

from __future__ import annotations

from collections.abc import Mapping
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

SUFFIXES = (".json", ".ubj")


class XGBoostConfig(ModelFileConfig):
    type: Literal["xgboost"] = "xgboost"
    num_threads: int = Field(0, ge=0, description="0: XGBoost's default (all cores)")


class XGBoostScorer(ModelFileScorer[XGBoostConfig]):
    """Scores a batch with one ``Booster.inplace_predict`` call (no DMatrix copy).

    Reasons are XGBoost's per-feature contributions (``pred_contribs``): with
    the bias they add up to the row's raw margin (log-odds).
    """

    config_model: ClassVar[type[ScorerConfig]] = XGBoostConfig
    artefact_kinds: ClassVar[tuple[str, ...]] = ("xgboost",)

    @cached_property
    def booster(self) -> Any:
        xgb = require("xgboost", "the xgboost scorer")
        if self.path.suffix.lower() not in SUFFIXES:
            raise SourceError(f"scorer.model: {self.config.model!r} is not an XGBoost JSON or "
                              "UBJSON model (.json, .ubj); save it with Booster.save_model")
        try:
            booster = xgb.Booster(model_file=str(self.path))
        except xgb.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0]
            raise SourceError(f"scorer.model: cannot load XGBoost model {self.config.model!r}: "
                              f"{first}") from None
        if self.config.num_threads:
            booster.set_param({"nthread": self.config.num_threads})
        return booster

    def model_features(self) -> list[str] | None:
        names = self.booster.feature_names
        return list(names) if names else None

    def score(self, table: pa.Table) -> np.ndarray:
        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        matrix = feature_matrix(table, self.features())
        return np.asarray(self.booster.inplace_predict(matrix, validate_features=False),
                          dtype=np.float64).reshape(-1)

    @cached_property
    def _single(self) -> Any:
        """A one-thread copy for single events: waking a thread pool costs more than one row."""
        booster = self.booster.copy()
        booster.set_param({"nthread": 1})
        return booster

    def score_one(self, row: Mapping[str, Any]) -> float:
        return float(self._single.inplace_predict(self._one_row(row), validate_features=False)[0])

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]] | None:
        if table.num_rows == 0:
            return []
        xgb = require("xgboost", "the xgboost scorer")
        data = xgb.DMatrix(feature_matrix(table, self.features()),
                           feature_names=self.booster.feature_names)
        contrib = np.asarray(self.booster.predict(data, pred_contribs=True), dtype=np.float64)
        return top_contributions(contrib[:, :-1], self.features(), top)
