"""The static check ``ceap validate`` runs on a program whose scorer names a registry model.

It builds the scorer (which reads the model's ``meta.json`` only) and compares
what the program says with what the model was trained on: the ``features``
list, if the program gives one, must be the model's, in order; a source
column the program declares with a type that cannot feed a numeric feature
(a string, a date) is rejected. Programs naming a model file are left to the
run-time checks (the file may not exist yet).
"""

from __future__ import annotations

import re
from typing import Any

from ceap.errors import CeapError
from ceap.ml.artefacts import parse_ref
from ceap.plugin import PluginContext
from ceap.registry import Registry, default_registry
from ceap.spec.program import ProgramSpec

#: declared source column types that can feed a numeric feature
NUMERIC = ("int", "float", "bool")
_LOCATED = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_]+)*): (.*)$", re.S)


def _issue(message: str) -> tuple[str, str]:
    match = _LOCATED.match(message)
    return (match.group(1), match.group(2)) if match else ("scorer", message)


def check_program_model(spec: ProgramSpec, context: PluginContext,
                        registry: Registry | None = None) -> list[tuple[str, str]]:
    """``(field, message)`` issues; empty when the program agrees with its model."""
    config = spec.scorer
    model = getattr(config, "model", None)
    if config is None or not isinstance(model, str) or parse_ref(model) is None:
        return []
    registry = registry or default_registry()
    try:
        scorer: Any = registry.create("scorer", config, context)
        meta = getattr(scorer, "metadata", None)
        if meta is None:
            return []
        scorer.features()
    except CeapError as exc:
        return [_issue(str(exc))]
    issues = []
    for feature in meta.features:
        if feature.name in spec.features:  # the program computes it
            continue
        declared = spec.source.columns.get(feature.name)
        if declared is not None and declared not in NUMERIC:
            issues.append(("scorer.features",
                           f"model {meta.ref} reads {feature.name!r} as {feature.type}, but "
                           f"source.columns declares it {declared}"))
    return issues
