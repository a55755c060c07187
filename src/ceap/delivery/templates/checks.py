"""Checking templates before anything is sent (``ceap validate``): syntax,
unknown variables, payload keys, profile and candidate fields.

Jinja2 is imported only for a template field not seen passing before
(:mod:`ceap.delivery.templates.source_checks`; see :func:`passed_sources`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ceap.delivery.delivery_config import DeliveryConfig, TemplatesConfig
from ceap.delivery.templates.context import DIGEST_FIELDS as DIGEST_FIELDS
from ceap.delivery.templates.context import Known as Known
from ceap.delivery.templates.files import NAME_RE, TemplateFile, parse_template_file, part_kind, where
from ceap.errors import SpecError
from ceap.sqlcache import ParsedExpressions, cache_dir


def check_source(source: str, known: Known, html: bool = False) -> list[str]:
    """Problems with one template field: syntax, unknown variables, unknown
    payload keys, profile or candidate fields.

    A field that passed is remembered (:func:`passed_sources`): the next check of the same
    field, for the same program data, needs no Jinja2."""
    passed = passed_sources()
    key = _source_key(source, known, html)
    if key in passed:
        return []
    from ceap.delivery.templates.source_checks import source_problems

    problems = source_problems(source, known, html)
    if not problems:
        passed.add(key)
    return problems


def _source_key(source: str, known: Known, html: bool) -> str:
    return "\0".join([source, ",".join(sorted(known.payload)), known.category, str(known.digest),
                      str(html)])


#: the modules whose code decides what check_source accepts
_CHECK_MODULES = ("source_checks.py", "sandbox.py", "context.py")


@lru_cache(maxsize=1)
def passed_sources() -> ParsedExpressions:
    """The template fields that passed :func:`check_source`, kept as the SQL that parsed is
    (:mod:`ceap.sqlcache`: ``CEAP_CACHE_DIR``), in a file per Jinja2 version and per version
    of the checking code (a digest of its modules): a change to either checks every field
    again. Fields with problems are never kept."""
    folder = cache_dir()
    if folder is None:
        return ParsedExpressions(None)
    try:
        code = hashlib.sha256(b"".join(Path(__file__).with_name(name).read_bytes()
                                       for name in _CHECK_MODULES)).hexdigest()[:16]
        jinja = version("jinja2")
    except (OSError, PackageNotFoundError):
        return ParsedExpressions(None)
    return ParsedExpressions(folder / f"templates-passed-jinja2-{jinja}-{code}.txt")


def program_payload_keys(spec: Any) -> frozenset[str]:
    action = spec.action
    keys = set(action.payload) | set(action.payload_columns)
    if getattr(action, "items", 0):
        keys.add("items")
    if getattr(action, "digest", None) is not None:
        keys.add("digest")
    return frozenset(keys)


def validate_template_file(tf: TemplateFile, known: Known, channels: Iterable[str],
                           channel_kinds: dict[str, str] | None = None,
                           exempt: Iterable[str] = ("transactional", "security")) -> list[str]:
    """Every problem with ``tf`` for a program sending on ``channels``."""
    problems: list[str] = []
    for ch in channels:
        kind = part_kind(ch, channel_kinds)
        if tf.part([ch, kind, "default"], [None]) is None:
            problems.append(f"no part for channel {ch!r} (add '{ch}:' or 'default:')")
    marketing = known.category not in set(exempt)
    for part in tf.all_parts():
        for name, source in part.fields.items():
            for issue in check_source(source, known, html=name == "html"):
                problems.append(f"{where(part, name)}: {issue}")
        if marketing and part.kind == "email" and not any(
                "unsubscribe_url" in part.fields.get(f, "") for f in ("text", "html")):
            problems.append(f"{where(part, 'text')}: marketing e-mail must show the unsubscribe link "
                            "({{ unsubscribe_url }}) in its text or html")
    return problems


def validate_template(templates_dir: str | Path, name: str, known: Known, channels: Iterable[str],
                      config: TemplatesConfig | None = None,
                      exempt: Iterable[str] = ("transactional", "security")) -> list[str]:
    """Problems with template ``name`` (each names the file), empty when it is fine."""
    config = config or TemplatesConfig()
    if not NAME_RE.match(name or ""):
        return [f"invalid template name {name!r}"]
    base = Path(templates_dir)
    path = next((p for p in (base / f"{name}.yaml", base / f"{name}.yml") if p.exists()),
                base / f"{name}.yaml")
    if not path.exists():
        return [f"template {name!r} not found: {path}"]
    try:
        tf = parse_template_file(path, name, config)
    except SpecError as exc:
        return exc.lines()
    return [f"{path}: {p}" for p in validate_template_file(tf, known, channels, config.channel_kinds,
                                                             exempt)]


def validate_program_templates(program_spec: Any, project_dir: str | Path,
                               config: DeliveryConfig | dict[str, Any] | None = None
                               ) -> list[tuple[str, str]]:
    """``(field, message)`` for every template problem of one program, for
    ``ceap validate``: a missing file or channel part, a syntax error, a variable
    the program's payload (``action.payload`` keys and ``payload_columns``) or the
    profile does not have; each message names the template file."""
    cfg = _delivery_config(config, project_dir)
    action = program_spec.action
    folder = Path(cfg.templates.dir)
    folder = folder if folder.is_absolute() else Path(project_dir) / folder
    keys = program_payload_keys(program_spec)
    # escalation steps send the action's template on their own channels
    channels = list(dict.fromkeys([*action.channels, *(ch for step in getattr(action, "escalation", ())
                                                       for ch in step.channels)]))
    issues = [("action.template", p) for p in
              validate_template(folder, action.template, Known(keys, action.category,
                                    getattr(action, "digest", None) is not None), channels,
                                cfg.templates, cfg.exempt_categories)] if action.template else []
    journey = getattr(program_spec, "journey", None)
    for i, step in enumerate(journey.steps if journey is not None else ()):
        send = step.send
        if send is None or (send.template is None and send.channels is None) or not (
                send.template or action.template):
            continue  # the action's template on the action's channels: checked above
        known = Known(keys | set(send.payload), action.category)
        issues += [(f"journey.steps[{i}].send.template", p) for p in
                   validate_template(folder, send.template or action.template, known,
                                     send.channels or action.channels, cfg.templates,
                                     cfg.exempt_categories)]
    return issues


def _delivery_config(config: DeliveryConfig | dict[str, Any] | None, project_dir: str | Path
                     ) -> DeliveryConfig:
    if config is not None:
        return DeliveryConfig.coerce(config)
    from ceap.spec.project import load_project

    project = load_project(project_dir)
    return DeliveryConfig.coerce(getattr(project, "delivery", None))

