"""Pydantic validation errors as ``(field, message)`` pairs a person can act on.

A location is written ``a.b[0].c`` without the tags pydantic adds for union
members; an unknown field gets "did you mean ..." from the fields of the
model it was found in (walked from the model validated, through nested
models, lists, dicts and tagged unions), so a typo deep inside a program or
``ceap.yaml`` is answered as precisely as one at the top.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def format_loc(parts: Iterable[Any]) -> str:
    """``("filters", 0, "expr")`` -> ``filters[0].expr``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def clean_loc(loc: Sequence[Any], data: Any) -> list[Any]:
    """Drop the discriminator tags pydantic puts in locations (``source.csv.path``)."""
    out: list[Any] = []
    node = data
    tagged = False  # this node's tag was dropped: a field named like the type is kept
    last = len(loc) - 1
    for i, part in enumerate(loc):
        # a tag is followed by the field inside it: a last part named like the type is the field
        if not tagged and i < last and isinstance(node, dict) and isinstance(part, str) \
                and part not in node and node.get("type") == part:
            tagged = True
            continue
        tagged = False
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _tags(model: type[BaseModel]) -> set[str]:
    """What pydantic may put in a location for ``model`` as a union member."""
    tags = {model.__name__}
    field = model.model_fields.get("type")
    if field is not None:
        if get_origin(field.annotation) is Literal:
            tags.update(str(a) for a in get_args(field.annotation))
        if isinstance(field.default, str):
            tags.add(field.default)
    return tags


def fields_at(model: Any, loc: Sequence[Any]) -> set[str] | None:
    """The field names of the model found at ``loc`` (a raw pydantic location, tags
    included) inside ``model``; None when the walk loses its way."""
    tp = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (list, tuple, set, frozenset) and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) in (Union, types.UnionType):
            member = next((m for m in get_args(tp) if isinstance(m, type) and issubclass(m, BaseModel)
                           and str(part) in _tags(m)), None)
            if member is None:
                return None
            tp = member
        else:
            return None
    tp = _unwrap(tp)
    return set(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def suggestion(word: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``names``, or nothing."""
    import difflib  # only for a mistyped name: not at start-up

    close = difflib.get_close_matches(word, [n for n in names if n != word], n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def message(err: Any, model: Any = None, vocabulary: Iterable[str] = ()) -> str:
    """The text of one pydantic error: "unknown field (did you mean ...)" for a typo,
    "required field is missing", or pydantic's message without its "Value error, "."""
    kind, text = err["type"], err["msg"]
    if kind == "extra_forbidden":
        loc = err["loc"]
        names = fields_at(model, loc[:-1]) if model is not None else None
        return "unknown field" + suggestion(str(loc[-1]) if loc else "?",
                                            names if names is not None else vocabulary)
    if kind == "missing":
        return "required field is missing"
    return text[len("Value error, "):] if text.startswith("Value error, ") else text


def config_issues(exc: ValidationError, model: Any, data: Any = None,
                  prefix: str = "") -> list[tuple[str, str]]:
    """``(field, message)`` per error of ``model.model_validate(data)``; ``prefix`` is the
    location of ``data`` in its file (``channels.crm``)."""
    issues = []
    for err in exc.errors():
        where = format_loc([*([prefix] if prefix else []), *clean_loc(err["loc"], data)])
        issues.append((where, message(err, model)))
    return issues
