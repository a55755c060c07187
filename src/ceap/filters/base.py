"""The filter contract: a boolean mask over a batch, with an id for the funnel."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from pydantic import Field

from ceap.errors import PluginError
from ceap.plugin import Plugin, PluginConfig

if TYPE_CHECKING:
    import pyarrow as pa


class FilterConfig(PluginConfig):
    """Every filter has an id; the run records how many rows each one removed."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    description: str | None = None


F = TypeVar("F", bound=FilterConfig)


class Filter(Plugin[F]):
    """Keeps the rows whose mask is true; a null counts as false.

    A filter that can say what it keeps as a SQL boolean expression returns it
    from ``sql`` and is evaluated inside the pipeline's single columnar query;
    any other filter implements ``mask``.
    """

    kind: ClassVar[str] = "filter"
    config_model: ClassVar[type[FilterConfig]] = FilterConfig

    @property
    def id(self) -> str:
        return self.config.id

    def columns(self) -> set[str] | None:
        """Columns the filter reads, or None when it cannot tell."""
        return None

    def sql(self) -> str | None:
        """A SQL boolean expression equivalent to the filter, or None."""
        return None

    def mask(self, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        """A boolean array as long as ``table``: true keeps the row.

        By default, ``sql()`` evaluated over ``table`` in DuckDB (null counts as false), so
        a filter that implements only ``sql`` works outside the pipeline too."""
        expr = self.sql()
        if expr is None:
            raise PluginError(f"filter {self.id!r} ({type(self).__module__}."
                              f"{type(self).__qualname__}): implements neither sql() nor mask()")
        from ceap.sqlexpr import evaluate, sandboxed_connection

        with sandboxed_connection() as con:
            return evaluate(con, table, f"COALESCE(({expr}), false) AS keep").column("keep")
