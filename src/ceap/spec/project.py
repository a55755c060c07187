"""The project config, ``ceap.yaml``: tenant, store, connections and channels.

Secrets never sit in the file: any string may reference an environment
variable as ``${NAME}`` or ``${NAME:-default}``; a reference to an unset
variable without a default is an error naming the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.errors import SpecError
from ceap.factories import empty_dict, empty_list
from ceap.model import DEFAULT_TENANT
from ceap.outcomes.config import ExportConfig, TrackingConfig, check_export_names
from ceap.plugin import PluginContext
from ceap.spec.issues import config_issues
from ceap.spec.journey import JourneysConfig
from ceap.spec.schedule import SchedulerConfig
from ceap.spec.yaml_io import read_yaml_mapping

PROJECT_FILE = "ceap.yaml"
DEFAULT_STORE = "sqlite:///.ceap/ceap.db"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ExperimentsConfig(BaseModel):
    """Tenant-wide experiment settings (``experiments:`` in ``ceap.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    global_control: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="share of customers who get no marketing from any program (a tenant-wide "
                    "control group; transactional and security programs are exempt)")


class BatchConfig(BaseModel):
    """The single-process engine: DuckDB's memory limit and where it spills."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_limit: str = Field("1GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
                              description="memory DuckDB may use for a run's selection")
    spill_dir: str | None = Field(None, description="scratch folder (default: the system's)")


class SparkConfig(BaseModel):
    """Where ``--engine spark`` runs: ``master`` (``local[2]``, ``spark://host:7077``,
    ``yarn``) or ``remote`` (Spark Connect, ``sc://host:15002``), plus Spark ``conf``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str | None = Field(None, description="default local[*]; ignored under spark-submit")
    remote: str | None = Field(None, description="a Spark Connect URL")
    conf: dict[str, str] = Field(default_factory=empty_dict)
    partitions: int | None = Field(None, gt=0, description="partitions of the source rows")


class ProjectConfig(BaseModel):
    """What ``ceap.yaml`` holds. Every field has a default: the file is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(DEFAULT_TENANT, pattern=r"^[A-Za-z0-9_\-]+$")
    store: str | None = Field(None, description="sqlite:///path or postgresql://...")
    candidate_store: str | None = Field(None, description="dynamodb://TABLE: candidates and "
                                                          "serving in DynamoDB (with TTL)")
    engine: Literal["local", "spark"] = Field("local", description="what runs batch programs")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    programs: str = Field("programs", description="folder of program YAML files")
    connections: dict[str, str] = Field(default_factory=empty_dict,
                                        description="name -> database URL")
    channels: dict[str, dict[str, Any]] = Field(default_factory=empty_dict,
                                                description="name -> channel plugin config")
    streams: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"events": {"type": "embedded"}},
        description="name -> stream connector config; the worker and the HTTP ingest use them")
    ingest: str = Field("events", description="the stream the HTTP ingest appends events to")
    state: str | None = Field(None, description="redis://... to share real-time state between "
                                                "workers (default: in the store)")
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig,
                                     description="policies (consent, quiet hours, caps) and templates")
    experiments: ExperimentsConfig = Field(default_factory=ExperimentsConfig,
                                           description="the global control group")
    tracking: TrackingConfig | None = None  # open pixel and click tracking (docs/outcomes.md)
    exports: list[ExportConfig] = Field(default_factory=empty_list,
                                        description="the outbound stream of outcomes (files, webhooks, "
                                                    "streams)")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig,
                                       description="`ceap scheduler`: time zone, dispatch, poll, lease")
    journeys: JourneysConfig = Field(default_factory=JourneysConfig,
                                     description="how often `ceap worker` and `ceap scheduler` tick journeys")
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    #: the file this config was read from (``--project deploy/ceap.prod.yaml``), for messages
    config_file: Path | None = Field(None, exclude=True)

    @field_validator("exports")
    @classmethod
    def _distinct_exports(cls, value: list[ExportConfig]) -> list[ExportConfig]:
        check_export_names(value)
        return value

    @field_validator("candidate_store")
    @classmethod
    def _candidate_store(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("dynamodb://"):
            raise ValueError("only dynamodb://TABLE is supported")
        return value

    def engine_settings(self, engine: str | None = None) -> Any:
        """The batch engine (``--engine`` beats ``engine``) and its settings."""
        from ceap.runtime.batch import EngineSettings
        from ceap.runtime.spill import LocalSettings

        chosen = engine or self.engine
        if chosen not in ("local", "spark"):
            raise SpecError("--engine", [("", f"unknown engine {chosen!r} (known: local, spark)")])
        return EngineSettings(
            engine=chosen,  # type: ignore[arg-type]
            local=LocalSettings(memory_limit=self.batch.memory_limit,
                                spill_dir=(str(self.base_dir / self.batch.spill_dir)
                                           if self.batch.spill_dir else None)),
            spark=self.spark.model_dump())

    def store_url(self, override: str | None = None) -> str:
        """``--store`` beats ``CEAP_STORE`` beats ``ceap.yaml`` beats the embedded default."""
        return override or os.environ.get("CEAP_STORE") or self.store or DEFAULT_STORE

    def where(self) -> str:
        """The config file, for messages: the one read, else ``ceap.yaml`` in the project."""
        return str(self.config_file or self.base_dir / PROJECT_FILE)

    def context(self, tenant: str | None = None) -> PluginContext:
        return PluginContext(base_dir=self.base_dir, connections=dict(self.connections),
                             tenant=tenant or self.tenant,
                             global_control=self.experiments.global_control)

    def programs_dir(self) -> Path:
        p = Path(self.programs)
        return p if p.is_absolute() else self.base_dir / p


def _interpolate(value: Any, loc: str, missing: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if default is not None and not value:  # the shell's ":-": unset or empty
                return default
            if value is not None:
                return value
            missing.append((loc, f"environment variable {name} is not set"))
            return ""
        return _REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{loc}.{k}" if loc else str(k), missing)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{loc}[{i}]", missing) for i, v in enumerate(value)]
    return value


def load_project(path: str | Path | None = None) -> ProjectConfig:
    """Load ``ceap.yaml`` from ``path`` (a file or folder; default: the current folder).

    No file means the defaults, rooted at the folder.
    """
    target = Path(path) if path else Path.cwd()
    file = target / PROJECT_FILE if target.is_dir() else target
    base = file.parent.resolve()
    if not file.exists():
        if path and not target.is_dir():
            raise SpecError(str(file), [("", "file not found")])
        return ProjectConfig(base_dir=base, config_file=file.resolve())
    data = read_yaml_mapping(file)
    missing: list[tuple[str, str]] = []
    data = _interpolate(data, "", missing)
    if missing:
        raise SpecError(str(file), missing)
    try:
        return ProjectConfig.model_validate({**data, "base_dir": base, "config_file": file.resolve()})
    except ValidationError as exc:
        raise SpecError(str(file), config_issues(exc, ProjectConfig, data)) from None
