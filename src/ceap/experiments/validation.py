"""Checks of a program's variants against the project, for ``ceap validate``.

A variant's template is checked like ``action.template`` (it must exist, have a part
for each of the variant's channels and use only variables the variant's payload has),
and a variant's channels must be configured in ``ceap.yaml``: an arm whose messages are
all suppressed as ``no_channel`` would still count as treated and bias the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ceap.delivery.delivery_config import DEFAULT_CHANNELS, DeliveryConfig
from ceap.delivery.templates import Known, program_payload_keys, validate_template
from ceap.spec.program import ProgramSpec


def variant_issues(spec: ProgramSpec, project: Any) -> list[tuple[str, str]]:
    """``(field, message)`` for every variant problem of ``spec`` in ``project``
    (a ``ProjectConfig``)."""
    issues: list[tuple[str, str]] = []
    variants = spec.experiment.variants
    if not variants:
        return issues
    configured = {**DEFAULT_CHANNELS, **project.channels}
    cfg = DeliveryConfig.coerce(project.delivery)
    folder = Path(cfg.templates.dir)
    folder = folder if folder.is_absolute() else Path(project.base_dir) / folder
    base_keys = program_payload_keys(spec)
    for i, v in enumerate(variants):
        where = f"experiment.variants[{i}]"
        for ch in v.channels or []:
            if ch not in configured:
                issues.append((f"{where}.channels", f"channel {ch!r} is not configured in ceap.yaml "
                                                    f"(configured: {', '.join(sorted(configured))})"))
        template = v.template or spec.action.template
        if template is None or (v.template is None and v.channels is None and not v.payload):
            continue  # nothing the action's own template check does not cover
        keys = {k for k, value in v.payload.items() if value is not None}
        removed = {k for k, value in v.payload.items() if value is None}
        known = Known(frozenset((base_keys - removed) | keys), spec.action.category,
                      spec.action.digest is not None)
        field = "template" if v.template else "channels" if v.channels else "payload"
        issues.extend((f"{where}.{field}", p) for p in validate_template(
            folder, template, known, v.channels or spec.action.channels, cfg.templates,
            cfg.exempt_categories))
    return issues
