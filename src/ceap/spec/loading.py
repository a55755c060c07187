"""Load program specs from YAML, validated against the installed plugins.

Plugin fields (``source``, ``filters``, ``scorer``) are discriminated unions
over every installed plugin's config model, built from the registry, so a
third-party plugin's config is checked as strictly as a built-in's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, ValidationError, create_model

from ceap.errors import SpecError
from ceap.registry import Registry, default_registry
from ceap.spec.experiment import Bandit, Guardrails, Variant
from ceap.spec.issues import clean_loc, format_loc, message
from ceap.spec.program import Action, Experiment, ProgramSpec, Selection
from ceap.spec.yaml_io import read_yaml_mapping

#: program field -> plugin kind
PLUGIN_FIELDS = {"source": "connector", "filters": "filter", "scorer": "scorer"}

_models: dict[tuple[int, int], type[ProgramSpec]] = {}


def _union(registry: Registry, kind: str) -> Any:
    models = registry.configs(kind)
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def program_model(registry: Registry | None = None) -> type[ProgramSpec]:
    """The ProgramSpec subclass whose plugin fields accept the installed plugins."""
    registry = registry or default_registry()
    key = (id(registry), registry.generation)
    if key not in _models:
        _models[key] = create_model(
            "Program",
            __base__=ProgramSpec,
            source=(_union(registry, "connector"), ...),
            filters=(list[_union(registry, "filter")], Field(default_factory=list)),  # type: ignore[valid-type]
            scorer=(_union(registry, "scorer") | None, None),
        )
    return _models[key]


def _unknown_types(data: dict[str, Any], registry: Registry) -> list[tuple[str, str]]:
    """Plugin ``type`` values no installed plugin answers to (checked before pydantic,
    so the message is the same whether one or many plugins of the kind exist)."""
    issues = []
    for field, kind in PLUGIN_FIELDS.items():
        value = data.get(field)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if isinstance(item, dict) and isinstance(item.get("type"), str) \
                    and item["type"] not in registry.names(kind):
                where = f"{field}[{i}].type" if i is not None else f"{field}.type"
                broken = registry.broken.get((kind, item["type"]))
                issues.append((where, broken or f"unknown {kind} type {item['type']!r} "
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
        return program_model(registry).model_validate(prepared)
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
