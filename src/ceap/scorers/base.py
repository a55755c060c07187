"""The scorer contract: one float per row, vectorised over a batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ceap.errors import SourceError
from ceap.plugin import Plugin, PluginConfig

if TYPE_CHECKING:  # NumPy and Arrow are imported where rows are scored
    import numpy as np
    import pyarrow as pa


class ScorerConfig(PluginConfig):
    """Base of scorer configs."""


S = TypeVar("S", bound=ScorerConfig)


class Scorer(Plugin[S]):
    """Scores a batch in one call. Must be deterministic and order-preserving."""

    kind: ClassVar[str] = "scorer"
    config_model: ClassVar[type[ScorerConfig]] = ScorerConfig

    def features(self) -> list[str]:
        """The columns the scorer reads."""
        return []

    def model_id(self) -> str:
        """Recorded with each candidate: which model (and version) made the score."""
        return self.config.type

    def score(self, table: pa.Table) -> np.ndarray:
        """A float64 array with one score per row of ``table``."""
        raise NotImplementedError

    def sql(self) -> str | None:
        """A SQL expression giving a row's score as DOUBLE (NULL: not scored), equal to
        what ``score`` gives, or None. A stream worker runs it in the query that makes its
        rows (one query for rows, filters and score)."""
        return None

    def score_one(self, row: Mapping[str, Any]) -> float:
        """The score of one event given as ``{column: value}``.

        This default builds a one-row table and calls ``score``; model scorers
        override it to skip that setup (a preallocated input, no table).
        """
        names = self.features() or list(row)
        missing = [n for n in names if n not in row]
        if missing:
            raise SourceError(f"scorer needs column(s) {', '.join(missing)} that the row lacks")
        import pyarrow as pa

        table = pa.table({n: pa.nulls(1, pa.float64()) if row[n] is None else pa.array([row[n]])
                          for n in names})
        return float(self.score(table)[0])

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]] | None:
        """Per row, the features that moved the score most (name -> contribution).

        Called on the selected rows only, so it may be slower than ``score``.
        None when the scorer cannot explain itself.
        """
        return None

    def recommend(self, table: pa.Table, k: int) -> list[list[dict[str, Any]]] | None:
        """Per row, up to ``k`` recommended items (``{"item": id, "score": s}``, best first).

        Called on the selected rows only; the items go into the candidate's
        payload as ``items``. None for scorers that score without recommending.
        """
        return None


def feature_matrix(table: pa.Table, features: list[str], dtype: Any = None) -> np.ndarray:
    """Columns of ``table`` as a C-contiguous float64 (or ``dtype``) matrix; nulls become NaN."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = np.float64 if dtype is None else dtype
    missing = [f for f in features if f not in table.column_names]
    if missing:
        raise SourceError(f"scorer needs column(s) {', '.join(missing)} that the rows lack")
    out = np.empty((table.num_rows, len(features)), dtype=dtype)
    for j, name in enumerate(features):
        column = table.column(name)
        kind = column.type
        if not (pa.types.is_boolean(kind) or pa.types.is_integer(kind) or
                pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
            raise SourceError(
                f"feature {name!r} has type {column.type}; a model needs numbers "
                "(encode it with a feature expression)"
            )
        start = 0
        for chunk in column.chunks:  # numbers are read in place and cast as they are copied
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                chunk = pc.cast(chunk, pa.float64())
            out[start:start + len(chunk), j] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    return out
