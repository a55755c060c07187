"""River online learners: they score, then keep learning from outcomes.

River models are saved as pickles (River has no other format), and a pickle
can run code when loaded, so the scorer loads one only with
``allow_pickle: true``. ``learn(table, labels)`` updates the model one row
at a time (River's online semantics) after scoring the rows first, which
gives progressive-validation metrics; ``save()`` writes the updated model
as the next version of its registry artefact. Needs the ``online`` extra
(``pip install 'ceap[online]'``).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from ceap.errors import SourceError
from ceap.ml.artefacts import (
    Artefact,
    FeatureSpec,
    Fingerprint,
    ModelMeta,
    ModelRegistry,
    library_versions,
)
from ceap.ml.deps import require
from ceap.ml.explain import top_contributions
from ceap.ml.metrics import binary_metrics
from ceap.scorers.base import ScorerConfig, feature_matrix
from ceap.scorers.model_file import ModelFileConfig, ModelFileScorer


class RiverConfig(ModelFileConfig):
    type: Literal["river"] = "river"
    allow_pickle: bool = Field(False, description="River models are pickles: load only if trusted")


def positive_proba(probs: Mapping[Any, float]) -> float:
    for key in (True, 1, "1", "True"):
        if key in probs:
            return float(probs[key])
    return 0.0


def _positive_column(frame: Any) -> np.ndarray:
    names = list(frame.column_names if isinstance(frame, pa.Table) else frame.columns)
    for key in (True, 1, "1", "True"):
        if key in names:
            column = frame.column(str(key)) if isinstance(frame, pa.Table) else frame[key]
            return np.asarray(column, dtype=np.float64).reshape(-1)
    return np.zeros(len(frame), dtype=np.float64)


class RiverScorer(ModelFileScorer[RiverConfig]):
    """Scores with ``predict_proba_many`` over the complete rows (rows with a missing
    value, and models without it, go row by row with the missing keys left out)."""

    config_model: ClassVar[type[ScorerConfig]] = RiverConfig
    artefact_kinds: ClassVar[tuple[str, ...]] = ("river",)

    @cached_property
    def model(self) -> Any:
        require("river", "the river scorer")
        if not self.config.allow_pickle:
            raise SourceError(f"scorer.allow_pickle: River models are stored as pickles, which "
                              f"can run code when loaded; set allow_pickle: true if you trust "
                              f"{self.path}")
        try:
            with open(self.path, "rb") as fh:
                return pickle.load(fh)
        except Exception as exc:
            raise SourceError(f"scorer.model: cannot load River model {self.config.model!r}: "
                              f"{exc}") from None

    @cached_property
    def _learned(self) -> dict[str, Any]:
        return {"rows": 0, "hash": hashlib.sha256(), "y": [], "p": []}

    def model_id(self) -> str:
        base = super().model_id()
        rows = self._learned["rows"]
        return f"{base}+{rows}" if rows else base

    @staticmethod
    def _row(features: list[str], values: np.ndarray) -> dict[str, float]:
        return {f: float(v) for f, v in zip(features, values, strict=True) if not math.isnan(v)}

    def _proba_one(self, x: dict[str, float]) -> float:
        return positive_proba(self.model.predict_proba_one(x))

    def score(self, table: pa.Table) -> np.ndarray:
        features = self.features()
        matrix = feature_matrix(table, features)
        out = np.empty(table.num_rows, dtype=np.float64)
        complete = ~np.isnan(matrix).any(axis=1)
        alone = np.flatnonzero(~complete)
        if hasattr(self.model, "predict_proba_many") and complete.any():
            frame = pa.table({f: matrix[complete, j] for j, f in enumerate(features)})
            out[complete] = _positive_column(self.model.predict_proba_many(frame))
        else:
            alone = np.arange(table.num_rows)
        for i in alone:
            out[i] = self._proba_one(self._row(features, matrix[i]))
        return out

    def score_one(self, row: Mapping[str, Any]) -> float:
        try:
            return self._proba_one({f: float(row[f]) for f in self._features if row[f] is not None})
        except KeyError as exc:
            raise SourceError(f"scorer needs column(s) {exc.args[0]} that the row lacks") from None

    def learn(self, table: pa.Table, labels: Any) -> np.ndarray:
        """Learn from the outcomes ``labels`` (true/false per row of ``table``), one row at a
        time in order. Returns each row's score from before it was learned."""
        y = np.asarray(pa.array(labels).to_numpy(zero_copy_only=False))
        if y.shape != (table.num_rows,):
            raise SourceError(f"learn: {y.shape[0]} labels for {table.num_rows} rows")
        if y.dtype != bool:
            if not np.isin(y, [0, 1]).all():
                raise SourceError("learn: labels must be true/false or 0/1")
            y = y.astype(bool)
        features = self.features()
        matrix = feature_matrix(table, features)
        before = np.empty(table.num_rows, dtype=np.float64)
        for i in range(table.num_rows):
            x = self._row(features, matrix[i])
            before[i] = self._proba_one(x)
            self.model.learn_one(x, bool(y[i]))
        learned = self._learned
        learned["rows"] += table.num_rows
        sink = pa.BufferOutputStream()
        batch = pa.table({**{f: matrix[:, j] for j, f in enumerate(features)}, "__label": y})
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        learned["hash"].update(sink.getvalue().to_pybytes())
        learned["y"].append(y)
        learned["p"].append(before)
        return before

    def save(self, name: str | None = None) -> Artefact:
        """Write the model as it is now as the next version of ``name`` (default: this
        model's registry name); this scorer then serves (and names) that version."""
        meta = self.metadata
        name = name or (meta.name if meta else self.config.name or self.path.stem)
        learned = self._learned
        y = np.concatenate(learned["y"]) if learned["y"] else np.empty(0, dtype=bool)
        p = np.concatenate(learned["p"]) if learned["p"] else np.empty(0)
        metrics = {k: v for k, v in binary_metrics(y, p).items() if math.isfinite(v)} if y.size else {}
        registry = ModelRegistry(self.context.path(self.config.registry))
        new = ModelMeta(
            name=name, version=1, kind="river", file="model.pkl",
            features=meta.features if meta else [FeatureSpec(name=f, type="float")
                                                 for f in self.features()],
            label=meta.label if meta else None,
            fingerprint=Fingerprint(sha256=learned["hash"].hexdigest(), rows=learned["rows"],
                                    method="sha256 over the Arrow IPC of the learned rows, in order"),
            metrics=metrics,
            split={"method": "progressive", "rows": learned["rows"],
                   "description": "each outcome was scored before the model learned it"},
            created_at=datetime.now(UTC), libraries=library_versions("river"),
            params=meta.params if meta else {}, source=meta.source if meta else None,
            parent=super().model_id())
        with registry.staging(name) as staging:
            with open(staging / new.file, "wb") as fh:
                pickle.dump(self.model, fh)
            artefact = registry.publish(staging, new)
        self.__dict__.update(artefact=artefact, path=artefact.path)
        self.__dict__.pop("_learned", None)
        return artefact

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]] | None:
        """For a linear model (alone or last in a pipeline): weight times transformed value."""
        model = self.model
        steps = list(model.steps.values()) if hasattr(model, "steps") else [model]
        final = steps[-1]
        weights = getattr(final, "weights", None)
        if weights is None:
            return None
        features = self.features()
        matrix = feature_matrix(table, features)
        contrib = np.zeros_like(matrix)
        for i in range(table.num_rows):
            x = self._row(features, matrix[i])
            for step in steps[:-1]:
                x = step.transform_one(x)
            for j, f in enumerate(features):
                contrib[i, j] = float(weights.get(f, 0.0)) * float(x.get(f, 0.0))
        return top_contributions(contrib, features, top)
