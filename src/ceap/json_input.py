"""JSON and text that come from outside: bounded nesting, text every store can hold.

``loads`` is ``json.loads`` for untrusted bodies and lines. It measures the nesting
depth first, without recursion, and refuses more than ``MAX_DEPTH`` levels (``json``
recurses once per level, so a body nested ten thousand deep would raise
``RecursionError``, and code that walks the value would recurse as deep). Bytes must
be in the encoding they claim (UTF-8, or UTF-16/32 as ``json`` detects them), with no
surrogate smuggled in; ``NaN`` and ``Infinity`` are not JSON and are refused. Every
refusal is a ``ValueError``: ``json.JSONDecodeError`` for the syntax, ``JsonInputError``
for the rest (depth, encoding, ``NaN``). Bytes are read by orjson when it can (several
times faster); what it refuses or might read otherwise goes to ``json`` (``json_loads``),
so the values and the errors are ``json``'s.

A JSON string may still hold a lone surrogate (``"\\ud800"``), which no UTF-8 store or
wire can carry, or a NUL, which PostgreSQL text cannot: ``Text`` (a pydantic type) and
``find_bad_text`` name where one is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import AfterValidator, Field

MAX_DEPTH = 64


class JsonInputError(ValueError):
    """JSON refused for something other than its syntax: too deep, bytes not in their
    encoding, ``NaN``."""


def _no_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_scan = _DECODER.scan_once  # type: ignore[attr-defined]  # ``loads`` without its per-call set-up
_ESCAPED = re.compile(rb"\\.", re.DOTALL)
#: every digit as "0": 19 of them in a row may be an integer orjson reads otherwise than
#: ``json`` (as a float); a ``translate`` and a substring test, far cheaper than a regex
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
_KEEP = b'"[]{}'
_DROP = bytes(sorted(set(range(256)) - set(_KEEP)))
_STEP = np.zeros(256, np.int32)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


def depth(data: bytes) -> int:
    """How deep the arrays and objects of the JSON text ``data`` (UTF-8) nest, read
    without recursion; brackets inside strings do not count. For text that is not JSON
    the answer is at least the depth ``json`` would reach before its first error."""
    if b"[" not in data and b"{" not in data:
        return 0
    if b'\\"' in data:   # an escaped quote (or backslash) ends no string: drop the escapes first
        data = _ESCAPED.sub(b"", data)
    marks = np.frombuffer(data.translate(None, _DROP), np.uint8)   # quotes and brackets only
    steps = _STEP[marks]
    quotes = (marks == 34).view(np.uint8)
    steps[np.cumsum(quotes, dtype=np.uint8) & 1 == 1] = 0   # after an odd number of quotes: in a string
    return int(np.cumsum(steps, dtype=np.int32).max())


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(data)`` for untrusted input; raises ``ValueError`` (see the module)."""
    # orjson reads what it accepts (UTF-8, no BOM, no lone surrogate, no NaN, integers of
    # 64 bits) as ``json`` does; anything else takes ``json_loads``, which names the error
    # or reads what orjson refuses
    if type(data) is bytes and _LONG_NUMBER not in data.translate(_DIGITS) and (
            data.count(b"[") + data.count(b"{") <= max_depth or depth(data) <= max_depth):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json_loads(data, max_depth)


#: joins a batch into one JSON array; bodies holding no raw newline, the newlines are the seams
_SEAM = b",\n"
_KEEP_SEAMS = b'"[]{}\n'
_DROP_SEAMS = bytes(sorted(set(range(256)) - set(_KEEP_SEAMS)))
#: a batch this small is read body by body (bisecting further saves nothing)
_SMALL = 4


def loads_many(bodies: Sequence[bytes | str], max_depth: int = MAX_DEPTH
               ) -> tuple[list[Any], dict[int, ValueError]]:
    """``loads`` of each body: the values (None where it raised) and the error of each
    body that raised, by index. Values and errors are ``loads``'s, body by body.

    Usually each body is read by orjson, as ``loads`` would (``_each``: the checks done
    once over the batch's bytes). Else the batch is read in one orjson call, as the array
    ``[b0,\\nb1,\\n...]``; that is taken only when it holds exactly one value per body and
    every seam lies at the array's own level, outside any string (so no body can spill
    into the next one), with no body nested deeper than ``max_depth``. A batch that fails
    is split in two and each half read again, down to single bodies read by ``loads``, so
    one bad body costs a few joined reads, never the batch."""
    values: list[Any] = [None] * len(bodies)
    errors: dict[int, ValueError] = {}
    if bodies and set(map(type, bodies)) == {bytes}:  # one pass in C, not a generator's
        each = _each(bodies, max_depth)  # type: ignore[arg-type]
        if each is not None:
            return each, errors
        stack = [(0, len(bodies))]
    else:
        stack = [(i, i + 1) for i in range(len(bodies))]
    while stack:
        start, end = stack.pop()
        if end - start > _SMALL:
            got = _joined(bodies[start:end], max_depth)  # type: ignore[arg-type]
            if got is not None:
                values[start:end] = got
            else:
                middle = (start + end) // 2
                stack += [(middle, end), (start, middle)]
            continue
        for i in range(start, end):
            try:
                values[i] = loads(bodies[i], max_depth)
            except ValueError as exc:
                errors[i] = exc
    return values, errors


_KEEP_OPENERS = b"[{\n"
_DROP_OPENERS = bytes(sorted(set(range(256)) - set(_KEEP_OPENERS)))


def _each(bodies: Sequence[bytes], max_depth: int) -> list[Any] | None:
    """The values of ``bodies``, each read by orjson as ``loads`` reads it, when no body
    holds a raw newline, a run of 19+ digits or more than ``max_depth`` opening brackets
    (counted inside strings too: at least its depth) and orjson reads every body; else None.
    No joined reading, so no seam to check."""
    data = b"\n".join(bodies)
    if data.count(b"\n") != len(bodies) - 1 or _LONG_NUMBER in data.translate(_DIGITS):
        return None
    marks = np.frombuffer(data.translate(None, _DROP_OPENERS), np.uint8)
    if len(marks) - len(bodies) + 1 > max_depth:  # more openers in all than one body may hold
        body = np.cumsum(marks == 10, dtype=np.int64)[marks != 10]
        if int(np.bincount(body, minlength=len(bodies)).max()) > max_depth:
            return None
    try:
        return list(map(orjson.loads, bodies))
    except orjson.JSONDecodeError:
        return None


def _joined(bodies: Sequence[bytes], max_depth: int) -> list[Any] | None:
    """The values of ``bodies`` read as one JSON array, or None when that reading might
    differ from ``loads`` body by body (see ``loads_many``)."""
    data = b"[" + _SEAM.join(bodies) + b"]"
    if data.count(b"\n") != len(bodies) - 1 or _LONG_NUMBER in data.translate(_DIGITS):
        return None   # a body with a newline of its own, or a number orjson may read otherwise
    try:
        values = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if len(values) != len(bodies):   # a body holding two values at the top (``1,2``)
        return None
    # valid JSON, so every backslash starts an escape inside a string and no newline is
    # inside one; the level at each seam (inside the array only: 1) says no body left a
    # bracket open for the next one to close
    if b'\\"' in data:
        data = _ESCAPED.sub(b"", data)
    marks = np.frombuffer(data.translate(None, _DROP_SEAMS), np.uint8)
    steps = _STEP[marks]
    steps[np.cumsum(marks == 34, dtype=np.uint8) & 1 == 1] = 0
    level = np.cumsum(steps, dtype=np.int32)
    if int(level.max()) > max_depth + 1 or not bool((level[marks == 10] == 1).all()):
        return None
    return values  # type: ignore[no-any-return]


def json_loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``loads`` read by ``json`` alone (what the orjson way must give the same as)."""
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8", "surrogatepass")
    else:
        encoding = json.detect_encoding(data)
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            name = encoding.upper().replace("-SIG", "")
            raise JsonInputError(f"not valid {name}: {exc.reason} at byte {exc.start + 1}") from None
        raw = data if encoding.startswith("utf-8") else text.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth(raw) > max_depth:
        raise JsonInputError(f"nested deeper than {max_depth} levels")
    if text[:1] == "{" and text[-1:] == "}":
        try:
            value, end = _scan(text, 0)
            if end == len(text):
                return value
        except JsonInputError:
            raise
        except (ValueError, StopIteration):
            pass   # ``decode`` below names the error as ``json.loads`` does
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def json_lines(data: bytes) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    """A JSON Lines text: each line's value with its line number (from 1), and
    ``(line, reason)`` for each line that is not UTF-8 or not JSON (see ``loads``). Lines
    end at ``\\n`` only (``\\r\\n`` too); blank lines are skipped; a UTF-8 BOM may start the text."""
    values: list[tuple[int, Any]] = []
    broken: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            broken.append((number, f"not UTF-8: {exc.reason} at byte {exc.start + 1} of the line"))
            continue
        try:
            values.append((number, loads(text)))
        except ValueError as exc:
            broken.append((number, f"not JSON: {exc}"))
    return values, broken


# -- text every store can hold -------------------------------------------------------------------

NOT_UNICODE = "text with a lone surrogate is not valid Unicode"
HAS_NUL = "text with a NUL character cannot be stored"
#: what ``Text`` declares in JSON Schema (the surrogate rule has no JSON Schema form)
NO_NUL = "^[^\\u0000]*$"


class BadText(ValueError):
    """Text with a lone surrogate or a NUL; ``path`` is where it is inside a nested value."""

    def __init__(self, reason: str, path: tuple[str | int, ...] = ()):
        self.path = path
        super().__init__(reason)


def text_problem(text: str) -> str | None:
    """Why UTF-8 or a database cannot carry ``text`` (a lone surrogate, a NUL), or None."""
    if "\x00" in text:
        return HAS_NUL
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{NOT_UNICODE} (U+{ord(text[exc.start]):04X})"
    return None


def _strings(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside ``value`` (keys too) with its path, without recursion."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str):
                    yield (*path, key), key
                stack.append(((*path, key), sub))
        elif isinstance(item, list | tuple):
            stack.extend(((*path, i), sub) for i, sub in enumerate(item))


def find_bad_text(value: Any) -> BadText | None:
    """The first string inside ``value`` (a string, or lists and dicts of them) that
    ``text_problem`` refuses, with its path."""
    for path, text in _strings(value):
        reason = text_problem(text)
        if reason is not None:
            return BadText(reason, path)
    return None


def _text(text: str) -> str:
    reason = text_problem(text)
    if reason is not None:
        raise BadText(reason)
    return text


#: a ``str`` field that refuses text a store cannot hold (a lone surrogate, a NUL)
Text = Annotated[str, AfterValidator(_text), Field(json_schema_extra={"pattern": NO_NUL})]

#: JSON Schema of any JSON value whose text (keys too) has no NUL, as OpenAPI components
#: name it (``ceap.api.schemas.with_components`` lists it); for ``json_schema_extra``
JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "propertyNames": {"pattern": NO_NUL},
                                      "additionalProperties": JSON_VALUE_REF}
JSON_VALUE_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "pattern": NO_NUL}, {"type": ["number", "boolean", "null"]},
    {"type": "array", "items": JSON_VALUE_REF}, JSON_OBJECT_SCHEMA]}

__all__ = ["HAS_NUL", "JSON_OBJECT_SCHEMA", "JSON_VALUE_SCHEMA", "MAX_DEPTH", "NOT_UNICODE", "NO_NUL",
           "BadText", "JsonInputError", "Text", "depth", "find_bad_text", "json_lines", "loads", "loads_many",
           "text_problem"]
