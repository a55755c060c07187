"""One template field checked with Jinja2's parser (``checks.check_source`` asks this
module only for a field it has not seen pass before): syntax, unknown variables, payload
keys, profile and candidate fields."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables

from ceap.delivery.templates.context import (
    CANDIDATE_FIELDS,
    CONTEXT_NAMES,
    DICT_METHODS,
    DIGEST_FIELDS,
    PROFILE_FIELDS,
    Known,
)
from ceap.delivery.templates.sandbox import SafeEnvironment


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


def source_problems(source: str, known: Known, html: bool = False) -> list[str]:
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
        if len(keys) == 1 and root == "payload" and as_attr and first in DICT_METHODS \
                and first not in known.payload:
            continue  # payload.items(), payload.get('x')...
        message = None
        if root == "payload" and first == "digest" and known.digest and len(keys) > 1 \
                and keys[1][1] and keys[1][0] in DICT_METHODS:
            message = (f"write digest.{keys[1][0]}: payload.digest.{keys[1][0]} is the mapping's "
                       f"method (docs/digests.md#the-template)")
        elif root == "payload":
            if first not in known.payload:
                message = (f"payload has no key {first!r} (the program's payload has: "
                           f"{', '.join(sorted(known.payload)) or 'nothing'})")
            elif as_attr and first in DICT_METHODS:
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
