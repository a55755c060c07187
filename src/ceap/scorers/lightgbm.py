"""LightGBM models saved in LightGBM's text format (which cannot run code)."""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Literal

import lightgbm as lgb
import numpy as np
import pyarrow as pa
from pydantic import Field

from ceap.errors import SourceError
from ceap.scorers.base import Scorer, ScorerConfig, feature_matrix
from ceap.scorers.model_file import ModelFileConfig, model_id, model_path


class LightGBMConfig(ModelFileConfig):
    type: Literal["lightgbm"] = "lightgbm"
    num_threads: int = Field(0, ge=0, description="0: LightGBM's default (all cores)")


class LightGBMScorer(Scorer[LightGBMConfig]):
    """Scores a batch with one ``Booster.predict`` call; the model loads once."""

    config_model: ClassVar[type[ScorerConfig]] = LightGBMConfig

    @cached_property
    def path(self):  # type: ignore[no-untyped-def]
        return model_path(self.config, self.context.path)

    @cached_property
    def booster(self) -> lgb.Booster:
        try:
            return lgb.Booster(model_file=str(self.path))
        except lgb.basic.LightGBMError as exc:
            raise SourceError(f"scorer.model: cannot load LightGBM model {self.config.model!r}: "
                              f"{exc}") from None

    def features(self) -> list[str]:
        names = list(self.booster.feature_name())
        wanted = self.config.features or names
        if len(wanted) != len(names):
            raise SourceError(f"scorer.features: the model takes {len(names)} features "
                              f"({', '.join(names)}), the program gives {len(wanted)}")
        return wanted

    def model_id(self) -> str:
        return model_id(self.config, self.path)

    def score(self, table: pa.Table) -> np.ndarray:
        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        matrix = feature_matrix(table, self.features())
        params = {"num_threads": self.config.num_threads} if self.config.num_threads else {}
        return np.asarray(self.booster.predict(matrix, **params), dtype=np.float64)
