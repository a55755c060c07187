"""ONNX models through ONNX Runtime (fastest for single rows; the format runs no code)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import onnxruntime as ort
import pyarrow as pa
from pydantic import Field

from ceap.errors import SourceError
from ceap.scorers.base import Scorer, ScorerConfig, feature_matrix
from ceap.scorers.model_file import ModelFileConfig, model_id, model_path


class OnnxConfig(ModelFileConfig):
    type: Literal["onnx"] = "onnx"
    features: list[str] = Field(min_length=1,  # type: ignore[assignment]
                                description="columns in the model's input order")
    output: str | None = Field(None, description="output to read; default: the probabilities")
    positive_class: int = Field(1, ge=0, description="column of a probability matrix to use")


class OnnxScorer(Scorer[OnnxConfig]):
    """Runs one ONNX Runtime session over a whole batch; the session is built once."""

    config_model: ClassVar[type[ScorerConfig]] = OnnxConfig

    @cached_property
    def path(self):  # type: ignore[no-untyped-def]
        return model_path(self.config, self.context.path)

    @cached_property
    def session(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.path), options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise SourceError(f"scorer.model: cannot load ONNX model {self.config.model!r}: "
                              f"{exc}") from None

    @cached_property
    def _io(self) -> tuple[str, Any, str]:
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
        return inp.name, dtype, out

    def features(self) -> list[str]:
        return list(self.config.features)

    def model_id(self) -> str:
        return model_id(self.config, self.path)

    def score(self, table: pa.Table) -> np.ndarray:
        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        name, dtype, output = self._io
        matrix = feature_matrix(table, self.features()).astype(dtype, copy=False)
        result = np.asarray(self.session.run([output], {name: matrix})[0])
        if result.ndim == 2 and result.shape[1] > 1:
            result = result[:, self.config.positive_class]
        return result.reshape(-1).astype(np.float64)
