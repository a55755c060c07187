"""What every plugin shares: a typed, closed config model and a context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class PluginConfig(BaseModel):
    """Base of every plugin config: unknown fields are errors, ``type`` picks the plugin."""

    # defer_build: a config's validator is built when first used (validating a program
    # builds those of the plugins it names, inside the program's model), not when its
    # plugin is imported
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    type: str


ConfigT = TypeVar("ConfigT", bound=PluginConfig)


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may need from the project: where relative paths start,
    named connections (secrets already resolved from the environment) and the tenant."""

    base_dir: Path = field(default_factory=Path.cwd)
    connections: dict[str, str] = field(default_factory=dict)
    tenant: str = "default"
    #: the store of the running process, for plugins that write to it (the inbox channel)
    store: Any = None
    #: the tenant-wide global control share (``ceap.yaml`` ``experiments.global_control``)
    global_control: float = 0.0

    def path(self, value: str | Path) -> Path:
        """Resolve ``value`` against the project directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


class Plugin(Generic[ConfigT]):
    """Base of the five plugin kinds. Subclasses set ``config_model``."""

    kind: ClassVar[str] = ""
    config_model: ClassVar[type[PluginConfig]]
    #: the config class ``config_model`` must subclass (a base such as ``ExternalChannel``
    #: reads fields of its own config base); ``None``: the kind's config base is enough
    config_base: ClassVar[type[PluginConfig] | None] = None

    def __init__(self, config: ConfigT, context: PluginContext | None = None):
        self.config = config
        self.context = context or PluginContext()

    @classmethod
    def from_dict(cls, data: dict[str, Any], context: PluginContext | None = None) -> Any:
        """Build the plugin from a plain mapping (validated by ``config_model``)."""
        return cls(cls.config_model.model_validate(data), context)  # type: ignore[arg-type]
