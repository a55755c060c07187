"""Model files shared by the model scorers: where they are and which version."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field

from ceap.errors import SourceError
from ceap.scorers.base import ScorerConfig


class ModelFileConfig(ScorerConfig):
    model: str = Field(description="path to the model file, relative to the project")
    features: list[str] | None = Field(None, description="columns in the model's input order")
    name: str | None = Field(None, description="model name; default: the file's stem")
    version: str | None = Field(None, description="model version; default: a content hash")


def model_path(config: ModelFileConfig, resolve: object) -> Path:
    path: Path = resolve(config.model)  # type: ignore[operator]
    if not path.is_file():
        raise SourceError(f"scorer.model: model file {config.model!r} not found ({path})")
    return path


def model_id(config: ModelFileConfig, path: Path) -> str:
    version = config.version or hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{config.name or path.stem}@{version}"
