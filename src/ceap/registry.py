"""Plugin discovery: built-ins and third-party plugins register the same way,
through the entry-point groups ``ceap.connectors``, ``ceap.filters``,
``ceap.scorers``, ``ceap.channels`` and ``ceap.stores``.

A plugin is checked when it registers, not when it is first called: it must
subclass its kind's base class, and its config model must forbid unknown
fields and carry ``type: Literal["<its entry-point name>"]``.

Discovery lists the entry points without importing them (listing is cheap,
loading a plugin imports its libraries): a plugin is loaded, and checked, the
first time it is asked for by name, or by ``load_all`` for the whole set.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from ceap.errors import PluginError
from ceap.plugin import Plugin, PluginConfig

Kind = Literal["connector", "filter", "scorer", "channel", "store"]


class _Kinds(Mapping[str, tuple[str, type[Plugin[Any]]]]):
    """kind -> (entry-point group, base class); a base class is imported when first asked
    for (``ceap validate`` needs no store's, and no channel's: not their modules either)."""

    def __init__(self, where: dict[str, tuple[str, str]]):
        self._where = where

    def __getitem__(self, kind: str) -> tuple[str, type[Plugin[Any]]]:
        group, target = self._where[kind]
        module, _, name = target.partition(":")
        return group, getattr(importlib.import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def group(self, kind: str) -> str:
        """The entry-point group of ``kind`` (imports nothing)."""
        return self._where[kind][0]


#: kind -> (entry-point group, base class)
KINDS = _Kinds({
    "connector": ("ceap.connectors", "ceap.connectors.base:Connector"),
    "filter": ("ceap.filters", "ceap.filters.base:Filter"),
    "scorer": ("ceap.scorers", "ceap.scorers.base:Scorer"),
    "channel": ("ceap.channels", "ceap.channels.base:Channel"),
    "store": ("ceap.stores", "ceap.store.base:Store"),
})


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    target: str
    distribution: str


def _base_declaring(cls: type) -> str:
    """The class of ``cls``'s MRO that set its ``config_base``, as ``module.Name``."""
    owner = next(c for c in cls.__mro__ if "config_base" in vars(c))
    return f"{owner.__module__}.{owner.__qualname__}"


def check_plugin(kind: str, name: str, cls: Any) -> None:
    """Raise PluginError unless ``cls`` is a well-formed ``kind`` plugin named ``name``."""
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r} (kinds: {', '.join(KINDS)})")
    base = KINDS[kind][1]
    where = f"{kind} plugin {name!r} ({getattr(cls, '__module__', '?')}."\
            f"{getattr(cls, '__qualname__', cls)})"
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{where}: must subclass {base.__module__}.{base.__qualname__}")
    model = getattr(cls, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, PluginConfig)):
        raise PluginError(f"{where}: config_model must be a PluginConfig subclass")
    required = getattr(cls, "config_base", None)
    if required is not None and not issubclass(model, required):
        raise PluginError(f"{where}: config_model must subclass "
                          f"{required.__module__}.{required.__qualname__} (the config base of "
                          f"{_base_declaring(cls)})")
    if model is base.config_model:
        raise PluginError(f"{where}: must declare its own config_model")
    if model.model_config.get("extra") != "forbid":
        raise PluginError(f"{where}: config model must forbid extra fields")
    annotation = model.model_fields["type"].annotation
    if typing.get_origin(annotation) is not Literal or typing.get_args(annotation) != (name,):
        raise PluginError(f"{where}: config field 'type' must be Literal[{name!r}]")


class Registry:
    """The installed plugins of each kind, by name."""

    def __init__(self) -> None:
        self._plugins: dict[str, dict[str, type[Any]]] = {k: {} for k in KINDS}
        self._info: dict[tuple[str, str], PluginInfo] = {}
        #: bumped on every registration, so models built from the registry can be cached
        self.generation = 0
        #: plugins whose entry point failed to load or check: (kind, name) -> why
        self.broken: dict[tuple[str, str], str] = {}
        #: entry points listed but not loaded yet: kind -> name -> entry point
        self._pending: dict[str, dict[str, EntryPoint]] = {k: {} for k in KINDS}

    @classmethod
    def discover(cls) -> Registry:
        """List every plugin declared under the ``ceap.*`` entry-point groups; each is
        loaded when first asked for (``get``, ``configs``, ``load_all``)."""
        registry = cls()
        # read every distribution's entry points once, then pick the groups (each
        # ``entry_points(group=...)`` call would read them all again)
        installed = entry_points()
        for kind in KINDS:
            for ep in installed.select(group=KINDS.group(kind)):
                registry._pending[kind].setdefault(ep.name, ep)
        return registry

    def _load(self, kind: str, name: str) -> None:
        """Import and register the pending entry point ``name``, if there is one."""
        ep = self._pending.get(kind, {}).pop(name, None)
        if ep is None:
            return
        dist = ep.dist.name if ep.dist else "?"
        try:
            self.register(kind, name, ep.load(), target=ep.value, distribution=dist)
        except Exception as exc:  # one broken package must not take the others down
            self.broken[(kind, name)] = (
                f"cannot load {kind} plugin {name!r} ({ep.value}, from {dist}): {exc}")

    def load_all(self, kind: str | None = None) -> None:
        """Load every pending plugin (of ``kind``, or of all kinds)."""
        for k in [kind] if kind else list(KINDS):
            for name in sorted(self._pending[k]):
                self._load(k, name)

    def register(self, kind: str, name: str, cls: type[Any], *, target: str = "",
                 distribution: str = "local") -> None:
        """Add a plugin (checked now). Tests and notebooks may call this directly."""
        check_plugin(kind, name, cls)
        self._plugins[kind][name] = cls
        self._info[(kind, name)] = PluginInfo(
            kind, name, target or f"{cls.__module__}:{cls.__qualname__}", distribution)
        self.generation += 1

    def get(self, kind: str, name: str) -> type[Any]:
        self._load(kind, name)
        if (kind, name) in self.broken:
            raise PluginError(self.broken[(kind, name)])
        try:
            return self._plugins[kind][name]
        except KeyError:
            import difflib  # only for a mistyped name: not at start-up

            names = self.names(kind)  # loaded or not: the message lists every installed one
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise PluginError(f"unknown {kind} type {name!r} ({hint}installed: "
                              f"{', '.join(names) or 'none'})") from None

    def names(self, kind: str) -> list[str]:
        """The plugins of ``kind`` by name, loaded or not (listing loads nothing)."""
        return sorted(set(self._plugins[kind]) | set(self._pending[kind]))

    def configs(self, kind: str, names: Iterable[str] | None = None) -> list[type[PluginConfig]]:
        """The config models of the plugins of ``kind`` (only of ``names``, if given),
        by name; loads them, and leaves out those that fail to load."""
        wanted = sorted(set(names)) if names is not None else self.names(kind)
        for name in wanted:
            self._load(kind, name)
        return [self._plugins[kind][n].config_model for n in wanted if n in self._plugins[kind]]

    def info(self) -> list[PluginInfo]:
        """Every plugin (all loaded first; those that fail are in ``broken``)."""
        self.load_all()
        return [self._info[k] for k in sorted(self._info)]

    def create(self, kind: str, config: PluginConfig, context: Any = None) -> Any:
        """Instantiate the plugin that ``config.type`` names."""
        return self.get(kind, config.type)(config, context)


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The plugins installed in this environment (discovered once)."""
    return Registry.discover()
