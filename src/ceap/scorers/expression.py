"""The expression scorer: a SQL expression, or a weighted logistic of columns."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ceap.plugin import PluginContext
from ceap.scorers.base import Scorer, ScorerConfig, feature_matrix
from ceap.sqlexpr import check_expression, evaluate, sandboxed_connection

if TYPE_CHECKING:  # DuckDB, NumPy and Arrow come with the rows: validating imports no engine
    import duckdb
    import numpy as np
    import pyarrow as pa


class ExpressionScorerConfig(ScorerConfig):
    """Either ``expr`` (any SQL expression giving a number) or ``weights``
    (score = link(bias + sum(weight * column)))."""

    type: Literal["expression"] = "expression"
    expr: str | None = None
    weights: dict[str, float] | None = None
    bias: float = 0.0
    link: Literal["logistic", "identity"] = "logistic"
    name: str = Field("expression", description="recorded as the candidate's model")

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)

    @model_validator(mode="after")
    def _one_form(self) -> ExpressionScorerConfig:
        if (self.expr is None) == (self.weights is None):
            raise ValueError("give exactly one of 'expr' and 'weights'")
        if self.weights is not None and not self.weights:
            raise ValueError("weights is empty")
        return self


class ExpressionScorer(Scorer[ExpressionScorerConfig]):
    config_model: ClassVar[type[ScorerConfig]] = ExpressionScorerConfig

    def __init__(self, config: ExpressionScorerConfig, context: PluginContext | None = None):
        super().__init__(config, context)
        # one sandboxed connection per thread, kept: opening one costs more than scoring
        # a micro-batch (a connection is not safe to share between threads)
        self._local = threading.local()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = sandboxed_connection()
        return con

    def features(self) -> list[str]:
        return list(self.config.weights or {})

    def model_id(self) -> str:
        return self.config.name

    def sql(self) -> str | None:
        return f"CAST(({self.config.expr}) AS DOUBLE)" if self.config.expr is not None else None

    def score(self, table: pa.Table) -> np.ndarray:
        import numpy as np

        if self.config.expr is not None:
            out = evaluate(self._connection(), table, f"{self.sql()} AS score")
            return out.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
        weights = self.config.weights or {}
        z = feature_matrix(table, list(weights)) @ np.fromiter(weights.values(), np.float64)
        z += self.config.bias
        return 1.0 / (1.0 + np.exp(-z)) if self.config.link == "logistic" else z
