"""Checking templates before anything is sent (``ceap validate``): syntax,
unknown variables, payload keys, profile and candidate fields."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables

from ceap.delivery.delivery_config import DeliveryConfig, TemplatesConfig
from ceap.delivery.templates.context import CANDIDATE_FIELDS, CONTEXT_NAMES, PROFILE_FIELDS
from ceap.delivery.templates.files import NAME_RE, TemplateFile, parse_template_file, part_kind, where
from ceap.delivery.templates.sandbox import SafeEnvironment
from ceap.errors import SpecError

_DICT_METHODS = frozenset(n for n in dir(dict) if not n.startswith("_"))
#: what a digest message's template sees as ``digest`` (ceap.spec.digest.DigestView)
DIGEST_FIELDS = frozenset({"key", "count", "items", "more", "window_start", "window_end"})


@dataclass(frozen=True)
class Known:
    """What a program's candidates carry, for checking templates statically."""

    payload: frozenset[str]
    category: str = "marketing"
    #: the program has ``action.digest``: templates see ``digest`` (docs/digests.md)
    digest: bool = False


def _attr_chain(node: nodes.Node) -> tuple[str, list[tuple[Any, bool]]] | None:
    """``payload.a['b']`` -> ("payload", [("a", True), ("b", False)]) for constant lookups
    (True: attribute syntax)."""
    keys: list[tuple[Any, bool]] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            keys.append((node.attr, True))
        elif isinstance(node.arg, nodes.Const):
            keys.append((node.arg.value, False))
        else:
            keys = []  # a computed key: only what comes before it is known
        node = node.node
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return node.name, list(reversed(keys))
    return None


def _guarded(ast: nodes.Template) -> tuple[set[int], set[tuple[str, Any]]]:
    """Lookups the template guards itself: ``x | default(...)`` (that lookup), and
    keys tested with ``is defined`` (everywhere in the field)."""
    ids: set[int] = set()
    keys: set[tuple[str, Any]] = set()
    for f in ast.find_all(nodes.Filter):
        if f.name in ("default", "d") and f.node is not None:
            ids.add(id(f.node))
    for t in ast.find_all(nodes.Test):
        if t.name in ("defined", "undefined"):
            ids.add(id(t.node))
            chain = _attr_chain(t.node)
            if chain and len(chain[1]) == 1:
                keys.add((chain[0], chain[1][0][0]))
    return ids, keys


def _tests_digest(ast: nodes.Template) -> bool:
    """The field tests ``digest is defined`` (or ``undefined``): it renders in a program
    whose digest was removed (docs/digests.md)."""
    return any(t.name in ("defined", "undefined") and isinstance(t.node, nodes.Name)
               and t.node.name == "digest" for t in ast.find_all(nodes.Test))


def check_source(source: str, known: Known, html: bool = False) -> list[str]:
    """Problems with one template field: syntax, unknown variables, unknown
    payload keys, profile or candidate fields."""
    env = SafeEnvironment(autoescape=html)
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    problems: list[str] = []
    undeclared = find_undeclared_variables(ast)
    for name in sorted(undeclared - CONTEXT_NAMES - set(env.globals)):
        problems.append(f"unknown variable {name!r} (known: {', '.join(sorted(CONTEXT_NAMES))})")
    guarded, optional = _guarded(ast)
    if "digest" in undeclared and not known.digest and not _tests_digest(ast):
        problems.append("'digest' is set for programs with action.digest only (test it with "
                        "`digest is defined`; docs/digests.md)")
    seen: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _attr_chain(node)
        if chain is None or chain[0] not in undeclared or not chain[1] or id(node) in guarded:
            continue
        root, keys = chain
        first, as_attr = keys[0]
        if not isinstance(first, str) or (root, first) in optional:
            continue
        if len(keys) == 1 and root == "payload" and as_attr and first in _DICT_METHODS \
                and first not in known.payload:
            continue  # payload.items(), payload.get('x')...
        message = None
        if root == "payload" and first == "digest" and known.digest and len(keys) > 1 \
                and keys[1][1] and keys[1][0] in _DICT_METHODS:
            message = (f"write digest.{keys[1][0]}: payload.digest.{keys[1][0]} is the mapping's "
                       f"method (docs/digests.md#the-template)")
        elif root == "payload":
            if first not in known.payload:
                message = (f"payload has no key {first!r} (the program's payload has: "
                           f"{', '.join(sorted(known.payload)) or 'nothing'})")
            elif as_attr and first in _DICT_METHODS:
                message = f"write payload[{first!r}]: payload.{first} is the mapping's method"
        elif root == "profile" and first not in PROFILE_FIELDS:
            message = (f"profile has no field {first!r} (fields: {', '.join(sorted(PROFILE_FIELDS))}; "
                       f"custom ones are under profile.attributes)")
        elif root == "digest" and first not in DIGEST_FIELDS:
            message = f"digest has no field {first!r} (fields: {', '.join(sorted(DIGEST_FIELDS))})"
        elif root == "candidate" and first not in CANDIDATE_FIELDS:
            message = f"candidate has no field {first!r}"
        if message and message not in seen:
            seen.add(message)
            problems.append(message)
    return problems


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
    issues = [("action.template", p) for p in
              validate_template(folder, action.template, Known(keys, action.category,
                                    getattr(action, "digest", None) is not None), action.channels,
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

