"""YAML reading that refuses what PyYAML would silently accept (duplicate keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ceap.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse ``path`` as a YAML mapping, or raise SpecError naming the line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, [("", "file not found")]) from None
    except OSError as exc:
        raise SpecError(source, [("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(source, [(where, f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [("", f"invalid YAML: {exc}")]) from None
    if data is None:
        raise SpecError(source, [("", "file is empty")])
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping at the top level, got "
                                      f"{type(data).__name__}")])
    return data
