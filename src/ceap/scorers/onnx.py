"""ONNX models through ONNX Runtime (fastest for single rows; the format runs no code)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ceap.errors import SourceError
from ceap.ml.artefacts import parse_ref
from ceap.scorers.base import ScorerConfig, feature_matrix
from ceap.scorers.lightgbm import lightgbm_reasons, load_booster
from ceap.scorers.model_file import ModelFileConfig, ModelFileScorer

if TYPE_CHECKING:  # ONNX Runtime only when a model loads
    import onnxruntime as ort


class OnnxConfig(ModelFileConfig):
    type: Literal["onnx"] = "onnx"
    features: list[str] | None = Field(  # type: ignore[assignment]
        None, min_length=1, description="columns in the model's input order "
                                        "(required for a model file; a registry model has them)")
    output: str | None = Field(None, description="output to read; default: the probabilities")
    positive_class: int = Field(1, ge=0, description="column of a probability matrix to use")
    threads: int = Field(0, ge=0, description="intra-op threads; 0: ONNX Runtime's default")

    @model_validator(mode="after")
    def _features_for_files(self) -> OnnxConfig:
        if self.features is None and parse_ref(self.model) is None:
            raise ValueError("features: an ONNX model file does not name its inputs; "
                             "list the columns in input order")
        return self


class OnnxScorer(ModelFileScorer[OnnxConfig]):
    """Runs one ONNX Runtime session over a whole batch; the session is built once.

    ``score_one`` reuses the bound input name, dtype and output and a
    preallocated one-row input. ONNX models cannot explain themselves here;
    an artefact made by ``ceap train --kind onnx-from-lightgbm`` keeps the
    LightGBM model beside it, whose contributions are then the reasons.
    """

    config_model: ClassVar[type[ScorerConfig]] = OnnxConfig
    artefact_kinds: ClassVar[tuple[str, ...]] = ("onnx",)

    @cached_property
    def session(self) -> ort.InferenceSession:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.config.threads:
            options.intra_op_num_threads = self.config.threads
        try:
            return ort.InferenceSession(str(self.path), options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise SourceError(f"scorer.model: cannot load ONNX model {self.config.model!r}: "
                              f"{exc}") from None

    @cached_property
    def _io(self) -> tuple[str, Any, list[str]]:
        inp = self.session.get_inputs()[0]
        dtype = np.float32 if "float)" in inp.type else np.float64
        outputs = [o.name for o in self.session.get_outputs()]
        if self.config.output:
            if self.config.output not in outputs:
                raise SourceError(f"scorer.output: the model has no output "
                                  f"{self.config.output!r} (outputs: {', '.join(outputs)})")
            out = self.config.output
        else:
            out = next((o for o in outputs if "prob" in o.lower()), outputs[-1])
        return inp.name, dtype, [out]

    def _column(self, result: Any) -> np.ndarray:
        result = np.asarray(result)
        if result.ndim == 2 and result.shape[1] > 1:
            result = result[:, self.config.positive_class]
        return result.reshape(-1).astype(np.float64)

    def score(self, table: pa.Table) -> np.ndarray:
        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        name, dtype, output = self._io
        matrix = feature_matrix(table, self.features(), dtype)
        return self._column(self.session.run(output, {name: matrix})[0])

    def score_one(self, row: Mapping[str, Any]) -> float:
        name, dtype, output = self._io
        result = self.session.run(output, {name: self._one_row(row, dtype)})[0]
        return float(result[0, self.config.positive_class] if result.ndim == 2 and result.shape[1] > 1
                     else result.reshape(-1)[0])

    @cached_property
    def _explainer(self) -> Any:
        meta = self.metadata
        if meta is None or not meta.explainer or self.artefact is None:
            return None
        return load_booster(str(self.artefact.file(meta.explainer)), meta.explainer)

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]] | None:
        if self._explainer is None:
            return None
        return lightgbm_reasons(self._explainer, feature_matrix(table, self.features()),
                                self.features(), top)
