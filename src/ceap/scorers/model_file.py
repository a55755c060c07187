"""Model files shared by the model scorers: where they are and which version.

``model`` is either a registry reference (``churn``, ``churn@latest``,
``churn@3``: no dot, no slash) resolved in the project's ``models/`` folder,
or a path to a model file (``models/churn.txt``). A registry model brings its
feature list from ``meta.json``; a program that gives other ``features`` is
rejected. The candidate's model is ``name@version`` either way.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import Field, model_validator

from ceap.errors import SourceError
from ceap.ml.artefacts import Artefact, ModelMeta, ModelRegistry, parse_ref
from ceap.scorers.base import Scorer, ScorerConfig

if TYPE_CHECKING:  # NumPy where rows are scored: validating a program imports none
    import numpy as np


class ModelFileConfig(ScorerConfig):
    model: str = Field(description="a registry model (churn, churn@latest, churn@3) "
                                   "or the path of a model file, relative to the project")
    features: list[str] | None = Field(None, description="columns in the model's input order")
    name: str | None = Field(None, description="model name of a file; default: the file's stem")
    version: str | None = Field(None, description="model version of a file; default: a content hash")
    registry: str = Field("models", description="the model registry folder, relative to the project")

    @model_validator(mode="after")
    def _file_fields(self) -> ModelFileConfig:
        if parse_ref(self.model) is not None and (self.name or self.version):
            raise ValueError("name and version come from the registry for a model reference "
                             f"({self.model!r}); give them only with a model file (write "
                             f"./{self.model} for a file of that name)")
        return self


def model_path(config: ModelFileConfig, resolve: object) -> Path:
    path: Path = resolve(config.model)  # type: ignore[operator]
    if not path.is_file():
        raise SourceError(f"scorer.model: model file {config.model!r} not found ({path})")
    return path


def model_id(config: ModelFileConfig, path: Path) -> str:
    version = config.version or hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{config.name or path.stem}@{version}"


MF = TypeVar("MF", bound=ModelFileConfig)


class ModelFileScorer(Scorer[MF]):
    """Base of the scorers that load a model file or a registry artefact once."""

    #: the artefact kinds (``meta.json`` ``kind``) this scorer can load
    artefact_kinds: ClassVar[tuple[str, ...]] = ()

    @cached_property
    def artefact(self) -> Artefact | None:
        """The registry artefact ``model`` names; None when ``model`` is a file path."""
        ref = parse_ref(self.config.model)
        if ref is None:
            return None
        found = ModelRegistry(self.context.path(self.config.registry)).resolve(ref)
        if found.meta.kind not in self.artefact_kinds:
            raise SourceError(f"scorer.model: {found.meta.ref} is a {found.meta.kind} model, which "
                              f"the {self.config.type} scorer cannot load (use type: {found.meta.kind})")
        if not found.path.is_file():
            raise SourceError(f"scorer.model: the model file of {found.meta.ref} is missing "
                              f"({found.path})")
        return found

    @property
    def metadata(self) -> ModelMeta | None:
        """The artefact's ``meta.json`` (feature list and types, metrics), if from the registry."""
        return self.artefact.meta if self.artefact is not None else None

    @cached_property
    def path(self) -> Path:
        return self.artefact.path if self.artefact is not None else model_path(self.config,
                                                                               self.context.path)

    def model_id(self) -> str:
        meta = self.metadata
        return meta.ref if meta is not None else model_id(self.config, self.path)

    def model_features(self) -> list[str] | None:
        """The input names the model file itself declares, if any."""
        return None

    @cached_property
    def _features(self) -> list[str]:
        meta = self.metadata
        given = self.config.features
        if meta is not None:
            wanted = meta.feature_names
            if given is not None and list(given) != wanted:
                raise SourceError(f"scorer.features: model {meta.ref} was trained on "
                                  f"{', '.join(wanted)} (in this order); the program gives "
                                  f"{', '.join(given)}")
            return wanted
        names = self.model_features()
        if given is None and names is None:
            raise SourceError("scorer.features: the model file does not name its inputs; "
                              "list the columns under features")
        if given is not None and names is not None and len(given) != len(names):
            raise SourceError(f"scorer.features: the model takes {len(names)} features "
                              f"({', '.join(names)}), the program gives {len(given)}")
        return list(given if given is not None else names)  # type: ignore[arg-type]

    def features(self) -> list[str]:
        return list(self._features)

    @cached_property
    def _local(self) -> threading.local:
        return threading.local()

    def _one_row(self, row: Mapping[str, Any], dtype: Any = None) -> np.ndarray:
        """``row``'s features in a preallocated (per thread) 1-row matrix; None becomes NaN."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            import numpy as np

            buf = self._local.buf = np.empty((1, len(self._features)),
                                             dtype=np.float64 if dtype is None else dtype)
        values = buf[0]
        try:
            for j, name in enumerate(self._features):
                value = row[name]
                values[j] = math.nan if value is None else value
        except KeyError as exc:
            raise SourceError(f"scorer needs column(s) {exc.args[0]} that the row lacks") from None
        return buf
