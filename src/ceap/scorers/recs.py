"""Item affinity: recommendations from a trained matrix-factorisation model.

The model file is a NumPy ``.npz`` archive (read with ``allow_pickle=False``,
so it cannot run code) holding:

- ``customer_ids`` and ``item_ids``: the ids the factors belong to (strings),
- ``user_factors`` (customers x factors) and ``item_factors`` (items x factors),
- optionally ``item_names`` (shown beside each recommended item) and the items
  each customer already has as a CSR pair ``seen_indptr`` / ``seen_indices``,
  which are never recommended back.

A customer's affinity for an item is the dot product of their factors (an ALS
model from ``implicit`` writes exactly these). ``score`` is the affinity of the
customer's best item; ``recommend`` returns their top ``k`` items. A customer
the model does not know gets no score (NaN: counted as unscored) and no items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ceap.errors import SourceError
from ceap.scorers.base import Scorer, ScorerConfig

if TYPE_CHECKING:  # NumPy and Arrow where the model loads or rows are scored, not to validate
    import numpy as np
    import pyarrow as pa

#: rows scored per matrix product, to bound memory (rows x items floats)
CHUNK = 2048


@dataclass(frozen=True)
class AffinityModel:
    """Customer and item factors, and what each customer already has."""

    customer_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    seen_indptr: np.ndarray | None = None
    seen_indices: np.ndarray | None = None
    item_names: np.ndarray | None = None

    REQUIRED: ClassVar[tuple[str, ...]] = ("customer_ids", "item_ids", "user_factors",
                                           "item_factors")

    @classmethod
    def load(cls, path: Path) -> AffinityModel:
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [k for k in cls.REQUIRED if k not in archive.files]
                if missing:
                    raise SourceError(f"{path}: the model file lacks {', '.join(missing)}")
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: cannot read the model file: {exc}") from None
        model = cls(
            customer_ids=arrays["customer_ids"].astype(str),
            item_ids=arrays["item_ids"].astype(str),
            user_factors=np.asarray(arrays["user_factors"], dtype=np.float32),
            item_factors=np.asarray(arrays["item_factors"], dtype=np.float32),
            seen_indptr=arrays.get("seen_indptr"),
            seen_indices=arrays.get("seen_indices"),
            item_names=arrays["item_names"].astype(str) if "item_names" in arrays else None,
        )
        model.check(path)
        return model

    def save(self, path: Path) -> None:
        import numpy as np

        arrays: dict[str, np.ndarray] = {
            "customer_ids": np.asarray(self.customer_ids, dtype=str),
            "item_ids": np.asarray(self.item_ids, dtype=str),
            "user_factors": np.asarray(self.user_factors, dtype=np.float32),
            "item_factors": np.asarray(self.item_factors, dtype=np.float32),
        }
        if self.seen_indptr is not None and self.seen_indices is not None:
            arrays["seen_indptr"] = np.asarray(self.seen_indptr, dtype=np.int64)
            arrays["seen_indices"] = np.asarray(self.seen_indices, dtype=np.int32)
        if self.item_names is not None:
            arrays["item_names"] = np.asarray(self.item_names, dtype=str)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    def check(self, where: object) -> None:
        users, items = len(self.customer_ids), len(self.item_ids)
        if self.user_factors.shape[0] != users or self.item_factors.shape[0] != items or \
                self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise SourceError(f"{where}: factor shapes {self.user_factors.shape} and "
                              f"{self.item_factors.shape} do not match {users} customers and "
                              f"{items} items")
        if (self.seen_indptr is None) != (self.seen_indices is None) or (
                self.seen_indptr is not None and len(self.seen_indptr) != users + 1):
            raise SourceError(f"{where}: seen_indptr must have one entry per customer plus one, "
                              "with seen_indices beside it")

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.customer_ids.tolist())}

    def rows(self, customers: list[Any]) -> np.ndarray:
        """The model's row of each customer id; -1 for customers it does not know."""
        import numpy as np

        index = self._index
        return np.fromiter((index.get(str(c), -1) if c is not None else -1 for c in customers),
                           dtype=np.int64, count=len(customers))

    def affinities(self, rows: np.ndarray, exclude_seen: bool = True) -> np.ndarray:
        """(len(rows) x items) affinities of known customers; seen items get -inf."""
        import numpy as np

        scores = self.user_factors[rows] @ self.item_factors.T
        if exclude_seen and self.seen_indptr is not None and self.seen_indices is not None:
            starts, ends = self.seen_indptr[rows], self.seen_indptr[rows + 1]
            lengths = ends - starts
            if lengths.sum():
                which = np.repeat(np.arange(len(rows)), lengths)
                offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
                scores[which, self.seen_indices[np.repeat(starts, lengths) + offsets]] = -np.inf
        return scores

    def top_k(self, rows: np.ndarray, k: int, exclude_seen: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
        """Item indices (len(rows) x k, best first) and their affinities, for known customers."""
        import numpy as np

        k = min(k, len(self.item_ids))
        items = np.empty((len(rows), k), dtype=np.int64)
        values = np.empty((len(rows), k), dtype=np.float32)
        for start in range(0, len(rows), CHUNK):
            scores = self.affinities(rows[start:start + CHUNK], exclude_seen)
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            picked = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-picked, axis=1, kind="stable")
            items[start:start + CHUNK] = np.take_along_axis(part, order, axis=1)
            values[start:start + CHUNK] = np.take_along_axis(picked, order, axis=1)
        return items, values


class ItemAffinityConfig(ScorerConfig):
    type: Literal["item_affinity"] = "item_affinity"
    model: str = Field(description="path of the .npz model file, relative to the project")
    customer: str = Field("customer_id", description="column holding the ids the model knows")
    exclude_seen: bool = Field(True, description="never recommend an item the customer has")
    name: str | None = Field(None, description="model name; default: the file's stem")
    version: str | None = Field(None, description="model version; default: a content hash")


class ItemAffinityScorer(Scorer[ItemAffinityConfig]):
    """Scores a customer by their best item's affinity and recommends their top items."""

    config_model: ClassVar[type[ScorerConfig]] = ItemAffinityConfig

    @cached_property
    def path(self) -> Path:
        path = self.context.path(self.config.model)
        if not path.is_file():
            raise SourceError(f"scorer.model: model file {self.config.model!r} not found ({path})")
        return path

    @cached_property
    def model(self) -> AffinityModel:
        return AffinityModel.load(self.path)

    def features(self) -> list[str]:
        return [self.config.customer]

    def model_id(self) -> str:
        version = self.config.version or hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        return f"{self.config.name or self.path.stem}@{version}"

    def _rows(self, table: pa.Table) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.config.customer not in table.column_names:
            raise SourceError(f"scorer.customer: the rows have no column {self.config.customer!r}")
        column = pc.cast(table.column(self.config.customer), pa.string())
        return self.model.rows(column.to_pylist())

    def score(self, table: pa.Table) -> np.ndarray:
        import numpy as np

        scores = np.full(table.num_rows, np.nan, dtype=np.float64)
        if table.num_rows == 0:
            return scores
        rows = self._rows(table)
        known = rows >= 0
        if known.any():
            _, values = self.model.top_k(rows[known], 1, self.config.exclude_seen)
            best = values[:, 0].astype(np.float64)
            best[~np.isfinite(best)] = np.nan  # a customer who has every item
            scores[known] = best
        return scores

    def recommend(self, table: pa.Table, k: int) -> list[list[dict[str, Any]]]:
        import numpy as np

        out: list[list[dict[str, Any]]] = [[] for _ in range(table.num_rows)]
        rows = self._rows(table)
        known = np.flatnonzero(rows >= 0)
        if k <= 0 or known.size == 0:
            return out
        items, values = self.model.top_k(rows[known], k, self.config.exclude_seen)
        ids, names = self.model.item_ids, self.model.item_names
        for position, picked, affinity in zip(known.tolist(), items, values, strict=True):
            finite = np.isfinite(affinity)
            out[position] = [
                {"item": str(ids[i]), "score": round(float(s), 4),
                 **({"name": str(names[i])} if names is not None else {})}
                for i, s in zip(picked[finite].tolist(), affinity[finite].tolist(), strict=True)
            ]
        return out
