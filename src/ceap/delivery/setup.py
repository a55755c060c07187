"""Build the dispatcher's parts from the project config (``ceap.yaml``)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ceap.channels.base import Channel
from ceap.delivery.delivery_config import DEFAULT_CHANNELS
from ceap.errors import PluginError, SpecError
from ceap.registry import Registry, default_registry
from ceap.spec.issues import config_issues
from ceap.spec.project import ProjectConfig
from ceap.store.base import Store


def build_channels(project: ProjectConfig, store: Store,
                   registry: Registry | None = None) -> dict[str, Channel[Any]]:
    """One channel instance per name in ``ceap.yaml``'s ``channels`` (plus ``inapp``)."""
    registry = registry or default_registry()
    context = project.context()
    context = type(context)(base_dir=context.base_dir, connections=context.connections,
                            tenant=context.tenant, store=store)
    configs = {**DEFAULT_CHANNELS, **project.channels}
    channels: dict[str, Channel[Any]] = {}
    issues: list[tuple[str, str]] = []
    for name, raw in configs.items():
        kind = raw.get("type", name) if isinstance(raw, dict) else None
        if kind is None:
            issues.append((f"channels.{name}", "expected a mapping with a 'type'"))
            continue
        try:
            cls = registry.get("channel", kind)
        except PluginError as exc:
            issues.append((f"channels.{name}.type", str(exc)))
            continue
        data = {**raw, "type": kind}
        try:
            channels[name] = cls(cls.config_model.model_validate(data), context)
        except PluginError as exc:  # the config is valid; building the channel failed
            issues.append((f"channels.{name}", str(exc)))
        except ValidationError as exc:
            issues.extend(config_issues(exc, cls.config_model, data, f"channels.{name}"))
    if issues:
        raise SpecError(project.where(), issues)
    return channels
