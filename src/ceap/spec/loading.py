"""Load program specs from YAML, validated against the installed plugins.

Plugin fields (``source``, ``filters``, ``scorer``) are discriminated unions
over the installed plugins' config models, built from the registry, so a
third-party plugin's config is checked as strictly as a built-in's. A program
is validated against the plugins it names (only those are imported); the error
path loads them all, so messages and suggestions are the same as against all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, ValidationError, create_model

from ceap.errors import SpecError
from ceap.factories import empty_list
from ceap.registry import KINDS, Registry, default_registry
from ceap.spec.experiment import Bandit, Guardrails, Variant
from ceap.spec.issues import clean_loc, format_loc, message
from ceap.spec.program import Action, Experiment, ProgramSpec, Selection
from ceap.spec.yaml_io import read_yaml_mapping

#: program field -> plugin kind
PLUGIN_FIELDS = {"source": "connector", "filters": "filter", "scorer": "scorer"}

#: kind -> the plugin names a program uses (None: every installed plugin of the kind)
Named = dict[str, frozenset[str] | None]

_models: dict[tuple[int, int, tuple[tuple[str, frozenset[str] | None], ...]], type[ProgramSpec]] = {}


def _union(registry: Registry, kind: str, names: frozenset[str] | None) -> Any:
    models = registry.configs(kind, names)
    if not models:  # the program names no plugin of this kind: any config of the kind will do
        return KINDS[kind][1].config_model
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def program_model(registry: Registry | None = None, named: Named | None = None) -> type[ProgramSpec]:
    """The ProgramSpec subclass whose plugin fields accept the installed plugins (only those
    ``named`` per kind, when given: building the model loads the plugins it names)."""
    registry = registry or default_registry()
    named = named or {}
    wanted = tuple((kind, named.get(kind)) for kind in PLUGIN_FIELDS.values())
    for kind, names in wanted:
        registry.configs(kind, names)  # load first: loading bumps the generation
    key = (id(registry), registry.generation, wanted)
    if key not in _models:
        unions = {kind: _union(registry, kind, names) for kind, names in wanted}
        source: Any = unions["connector"]
        filter_: Any = unions["filter"]
        scorer: Any = unions["scorer"]
        _models[key] = create_model(
            "Program",
            __base__=ProgramSpec,
            source=(source, ...),
            filters=(list[filter_], Field(default_factory=empty_list)),  # type: ignore[valid-type]
            scorer=(scorer | None, None),
        )
    return _models[key]


def _plugin_items(data: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """``(field, where, item)`` for each plugin config in the program's mapping."""
    found = []
    for field in PLUGIN_FIELDS:
        value = data.get(field)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            where = f"{field}[{i}]" if i is not None else field
            found.append((field, where, item))
    return found


def named_plugins(data: dict[str, Any]) -> Named:
    """The plugin types a program's mapping names, per kind; None for a kind where
    some item names no type (its error message lists every installed plugin)."""
    named: dict[str, set[str] | None] = {kind: set() for kind in PLUGIN_FIELDS.values()}
    for field, _where, item in _plugin_items(data):
        kind = PLUGIN_FIELDS[field]
        if field not in data or (item is None and field == "scorer"):
            continue
        names = named[kind]
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            if names is not None:
                names.add(item["type"])
        else:
            named[kind] = None
    return {kind: frozenset(names) if names is not None else None for kind, names in named.items()}


def _unknown_types(data: dict[str, Any], registry: Registry) -> list[tuple[str, str]]:
    """Plugin ``type`` values no installed plugin answers to (checked before pydantic,
    so the message is the same whether one or many plugins of the kind exist).
    Loads the plugins the program names, and only those."""
    issues = []
    for field, where, item in _plugin_items(data):
        kind = PLUGIN_FIELDS[field]
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            registry.configs(kind, [item["type"]])  # load it: it may turn out broken
            if item["type"] not in registry.names(kind):
                broken = registry.broken.get((kind, item["type"]))
                issues.append((f"{where}.type", broken or f"unknown {kind} type {item['type']!r} "
                                                f"(installed: {', '.join(registry.names(kind))})"))
    return issues


def _prepare(data: dict[str, Any], default_name: str | None) -> dict[str, Any]:
    data = dict(data)
    if default_name is not None:
        data.setdefault("name", default_name)
    filters = data.get("filters")
    if isinstance(filters, list):
        data["filters"] = [
            {**f, "type": "expression"} if isinstance(f, dict) and "type" not in f and "expr" in f
            else f
            for f in filters
        ]
    return data


def _vocabulary(registry: Registry) -> set[str]:
    names: set[str] = set()
    models: list[type[BaseModel]] = [ProgramSpec, Selection, Action, Experiment, Variant, Bandit,
                                     Guardrails]
    for kind in PLUGIN_FIELDS.values():
        models.extend(registry.configs(kind))
    for model in models:
        names.update(model.model_fields)
    return names


def validation_issues(
    exc: ValidationError, data: Any, registry: Registry
) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(field, message)`` lines a person can act on."""
    model = program_model(registry)
    vocab = _vocabulary(registry)
    issues = []
    for err in exc.errors():
        parts = clean_loc(err["loc"], data)
        kind = PLUGIN_FIELDS.get(parts[0]) if parts and isinstance(parts[0], str) else None
        if err["type"] == "union_tag_invalid" and kind:
            tag = err.get("ctx", {}).get("tag")
            text = (f"unknown {kind} type {tag!r} "
                    f"(installed: {', '.join(registry.names(kind))})")
            parts = [*parts, "type"]
        elif err["type"] == "union_tag_not_found" and kind:
            text = f"missing 'type' (one of: {', '.join(registry.names(kind))})"
        else:
            text = message(err, model, vocab)
        issues.append((format_loc(parts), text))
    return issues


def parse_program(
    data: dict[str, Any],
    source: str = "<program>",
    default_name: str | None = None,
    registry: Registry | None = None,
) -> ProgramSpec:
    """Validate an already-parsed mapping as a program spec."""
    registry = registry or default_registry()
    prepared = _prepare(data, default_name)
    unknown = _unknown_types(prepared, registry)
    if unknown:
        raise SpecError(source, unknown)
    try:
        return program_model(registry, named_plugins(prepared)).model_validate(prepared)
    except ValidationError as exc:
        raise SpecError(source, validation_issues(exc, prepared, registry)) from None


def load_program(path: str | Path, registry: Registry | None = None) -> ProgramSpec:
    """Read and validate one program file; its name defaults to the file's stem."""
    path = Path(path)
    return parse_program(read_yaml_mapping(path), str(path), path.stem, registry)


def load_programs(directory: str | Path, registry: Registry | None = None) -> list[ProgramSpec]:
    """Every ``*.yaml``/``*.yml`` program in ``directory``, by file name."""
    paths = sorted([*Path(directory).glob("*.yaml"), *Path(directory).glob("*.yml")])
    return [load_program(p, registry) for p in paths]


def program_file_named(folder: Path, name: str) -> Path | None:
    """The one program file in ``folder`` whose top-level ``name:`` is ``name`` (a program
    named apart from its file), or None."""
    if not folder.is_dir():
        return None
    name_line = re.compile(r"""^name:[ \t]*(["']?)([a-z][a-z0-9_]*)\1[ \t]*(?:#.*)?$""", re.M)
    found = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            match = name_line.search(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if match and match.group(2) == name:
            found.append(path)
    return found[0] if len(found) == 1 else None
