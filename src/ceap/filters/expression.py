"""The expression filter: a SQL boolean expression over the row's columns."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import field_validator

from ceap.filters.base import Filter, FilterConfig
from ceap.sqlexpr import check_expression, evaluate, sandboxed_connection

if TYPE_CHECKING:  # Arrow comes with the rows: validating a program imports no engine
    import pyarrow as pa


class ExpressionFilterConfig(FilterConfig):
    """``- {id: big_cart, expr: "cart_value > 50 AND country = 'US'"}``"""

    type: Literal["expression"] = "expression"
    expr: str

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str) -> str:
        return check_expression(value)


class ExpressionFilter(Filter[ExpressionFilterConfig]):
    """Keeps rows where ``expr`` is true (null counts as false)."""

    config_model: ClassVar[type[FilterConfig]] = ExpressionFilterConfig

    def sql(self) -> str:
        return self.config.expr

    def mask(self, table: pa.Table) -> pa.ChunkedArray:
        with sandboxed_connection() as con:
            out = evaluate(con, table, f"COALESCE(({self.config.expr}), false) AS keep")
        return out.column("keep")
