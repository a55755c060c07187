"""Open the project's streams (``ceap.yaml``'s ``streams``) as connectors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ceap.errors import PluginError, SpecError
from ceap.realtime.source import StreamConnector
from ceap.registry import Registry, default_registry
from ceap.spec.issues import config_issues
from ceap.spec.project import ProjectConfig
from ceap.store.base import Store


def open_stream(project: ProjectConfig, name: str, store: Store,
                registry: Registry | None = None, named_by: str = "streams",
                **overrides: Any) -> StreamConnector[Any]:
    """The stream connector named ``name`` in ``ceap.yaml`` (``events``: the embedded queue);
    ``named_by``: the field of ``ceap.yaml`` that named it, for the error when it is not there."""
    registry = registry or default_registry()
    where = project.where()
    if name not in project.streams:
        raise SpecError(where, [(named_by, f"no stream named {name!r} "
                                            f"(configured: {', '.join(sorted(project.streams))})")])
    raw = {**project.streams[name], **overrides}
    try:
        cls = registry.get("connector", raw.get("type", ""))
    except PluginError as exc:
        raise SpecError(where, [(f"streams.{name}.type", str(exc))]) from None
    if not issubclass(cls, StreamConnector):
        raise SpecError(where, [(f"streams.{name}.type", f"{raw.get('type')!r} is not a stream connector")])
    context = replace(project.context(), store=store)
    try:
        return cls(cls.config_model.model_validate(raw), context)
    except ValidationError as exc:
        raise SpecError(where, config_issues(exc, cls.config_model, raw, f"streams.{name}")) from None
