"""Models as artefacts: ``<registry>/<name>/<version>/`` holds the model file and ``meta.json``.

Versions are integers that only grow; ``name@latest`` (or plain ``name``)
is the highest complete version. A version is written into a staging folder
and renamed into place, so a reader never sees half an artefact and two
writers never get the same number.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ceap.errors import SourceError

if TYPE_CHECKING:  # Arrow where a table is fingerprinted: reading a model's metadata needs none
    import pyarrow as pa

META = "meta.json"
NAME = r"[A-Za-z][A-Za-z0-9_\-]*"
_REF = re.compile(rf"^(?P<name>{NAME})(?:@(?P<version>[0-9]+|latest))?$")

ModelKind = Literal["lightgbm", "xgboost", "sklearn", "onnx", "river"]
FeatureType = Literal["int", "float", "bool"]


class FeatureSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    type: FeatureType


class Fingerprint(BaseModel):
    """What the model was trained on: a hash over the training columns and the row count."""

    model_config = ConfigDict(frozen=True)
    sha256: str
    rows: int
    method: str = "sha256 of the Arrow IPC stream of the feature, label and time columns"


class ModelMeta(BaseModel):
    """``meta.json``: enough to know what a model expects and how good it was."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(pattern=rf"^{NAME}$")
    version: int = Field(ge=1)
    kind: ModelKind
    file: str = Field(description="the model file, inside the version folder")
    features: list[FeatureSpec]
    label: str | None = None
    fingerprint: Fingerprint | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="on held-out rows")
    split: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    libraries: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    parent: str | None = Field(default=None, description="name@version this one was updated from")
    explainer: str | None = Field(default=None, description="a LightGBM text model giving contributions")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None  # None: the latest

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else 'latest'}"


def parse_ref(value: str) -> ModelRef | None:
    """``churn``, ``churn@latest`` or ``churn@3`` as a reference; None for anything else
    (a file path has a dot or a slash, a reference has neither)."""
    match = _REF.match(value.strip())
    if not match:
        return None
    version = match.group("version")
    return ModelRef(match.group("name"), None if version in (None, "latest") else int(version))


@dataclass(frozen=True)
class Artefact:
    meta: ModelMeta
    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / self.meta.file

    def file(self, name: str) -> Path:
        return self.folder / name


class ModelRegistry:
    """A folder of named, versioned model artefacts (default: ``models/`` in the project)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str, complete: bool = True) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()
                 and (not complete or (p / META).is_file())]
        return sorted(found)

    def resolve(self, ref: ModelRef | str) -> Artefact:
        """The artefact ``ref`` names; SourceError (``scorer.model: ...``) when there is none."""
        if isinstance(ref, str):
            parsed = parse_ref(ref)
            if parsed is None:
                raise SourceError(f"scorer.model: {ref!r} is not a model reference "
                                  "(name, name@latest or name@<version>)")
            ref = parsed
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise SourceError(f"scorer.model: no model named {ref.name!r} in {self.root} "
                              f"(models: {known}; train one with `ceap train {ref.name} ...`)")
        version = versions[-1] if ref.version is None else ref.version
        if version not in versions:
            raise SourceError(f"scorer.model: model {ref.name!r} has no version {version} "
                              f"(versions: {', '.join(map(str, versions))})")
        return self.load(ref.name, version)

    def load(self, name: str, version: int) -> Artefact:
        folder = self.root / name / str(version)
        try:
            meta = ModelMeta.model_validate_json((folder / META).read_text())
        except (OSError, ValidationError) as exc:
            raise SourceError(f"scorer.model: cannot read {folder / META}: "
                              f"{str(exc).splitlines()[0]}") from None
        if meta.name != name or meta.version != version:
            raise SourceError(f"scorer.model: {folder / META} says {meta.ref}, "
                              f"but it sits in {name}/{version}")
        return Artefact(meta, folder)

    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A private folder to write a new version's files into (removed if not published)."""
        if not re.fullmatch(NAME, name):
            raise ValueError(f"model name {name!r} must match {NAME}")
        folder = self.root / name / f".staging-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staging: Path, meta: ModelMeta) -> Artefact:
        """Give ``staging`` the next version number and move it into place."""
        for _ in range(1000):
            version = max(self.versions(meta.name, complete=False), default=0) + 1
            meta = meta.model_copy(update={"version": version})
            (staging / META).write_text(meta.model_dump_json(indent=2) + "\n")
            target = self.root / meta.name / str(version)
            if target.exists():
                continue
            try:
                os.rename(staging, target)
            except OSError:
                if target.exists():  # another writer took this number first
                    continue
                raise
            return Artefact(meta, target)
        raise RuntimeError(f"could not allocate a version for {meta.name!r}")


class _Hasher(io.RawIOBase):
    """A write-only file that hashes what is written to it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return len(data)


def fingerprint(table: pa.Table) -> Fingerprint:
    """sha256 over the Arrow IPC stream of ``table`` (one record batch, so chunking does not matter)."""
    import pyarrow as pa

    table = table.combine_chunks()
    hasher = _Hasher()
    with pa.ipc.new_stream(pa.PythonFile(hasher, mode="w"), table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return Fingerprint(sha256=hasher.digest.hexdigest(), rows=table.num_rows)


def feature_type(arrow_type: pa.DataType) -> FeatureType | None:
    """The feature type of a numeric column; None for anything a model cannot read."""
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    return None


def library_versions(*modules: str) -> dict[str, str]:
    """Installed versions of ceap, numpy, pyarrow and ``modules`` (the model's library)."""
    from importlib.metadata import PackageNotFoundError, version

    dists = {"ceap": "ceap", "numpy": "numpy", "pyarrow": "pyarrow", "lightgbm": "lightgbm",
             "xgboost": "xgboost", "sklearn": "scikit-learn", "skops": "skops", "river": "river",
             "onnxruntime": "onnxruntime", "onnxmltools": "onnxmltools", "onnx": "onnx"}
    out: dict[str, str] = {}
    for module in ("ceap", "numpy", "pyarrow", *modules):
        for dist in ((dists.get(module, module), "xgboost-cpu") if module == "xgboost"
                     else (dists.get(module, module),)):
            try:
                out[module] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return out
