"""The stored ``attributes`` text of an event: ``json.dumps(value, separators=(",", ":"),
default=str)``, written by the C encoder value by value, or, for values read from JSON,
by orjson in one call a batch where its text is surely that one (``encode_decoded``)."""

from __future__ import annotations

import json
import re
from itertools import chain, repeat
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

_EMPTY: dict[str, Any] = {}

_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _c_encoder() -> Any:
    """The C encoder ``_ENCODER.encode`` builds on each call, built once."""
    if c_make_encoder is None:  # pragma: no cover - CPython has it
        return None
    return c_make_encoder({}, _ENCODER.default, encode_basestring_ascii, None, _ENCODER.key_separator,
                          _ENCODER.item_separator, False, False, True)


_C_ENCODER = _c_encoder()


def encode_attributes(value: dict[str, Any]) -> str:
    """The stored ``attributes`` text: ``json.dumps(value, separators=(",", ":"), default=str)``."""
    global _C_ENCODER
    if _C_ENCODER is not None:
        try:
            return "".join(_C_ENCODER(value, 0))
        except Exception:  # a circular or unencodable value: the encoder may hold stale marks
            _C_ENCODER = _c_encoder()
    return _ENCODER.encode(value)  # raises as json.dumps does


#: where orjson's text of a value read from JSON may not be ``json.dumps``'s (ASCII, compact):
#: an escape, DEL and non-ASCII text (``ensure_ascii`` escapes them), a number in exponent
#: form or below 0.0001 (``json``: ``1e-05``, orjson: ``0.00001``); looked for with ``in``
#: first (a regex over every byte would cost more than orjson saves)
_MAYBE_OTHER = (b"\\", b"\x7f", b"e+", b"e-", b"0.0000")
_OTHER = re.compile(rb"\\|\x7f|[\x80-\xff]|\de[-+]|0\.0000")
#: this orjson writes numbers as ``json`` does, or in a form ``_OTHER`` finds (checked once:
#: an orjson that wrote ``1e16`` for ``1e+16`` would leave every text to ``json``)
ORJSON_AS_JSON = all(orjson.dumps(v) == json.dumps(v).encode() or _OTHER.search(orjson.dumps(v))
                      for v in (1e16, 1.5e17, 1e22, 1e-5, 1.5e-7, 5e-324, 1.7976931348623157e308,
                                0.0001, 123456789.123, 2**63 - 1, -(2**63), -0.0, 0.1 + 0.2))


#: put between the values of a batch written in one orjson call (``"\\u001f"``), and the text
#: that then stands between two values, and after the last
_SEPARATOR = "\x1f"
_SPLIT, _LAST = b',"\\u001f",', b',"\\u001f"]'


def encode_decoded(values: list[Any], ok: np.ndarray) -> pa.Array:
    """The ``attributes`` text of each value (``"{}"`` where not ``ok``) as a string column,
    for values read from JSON: orjson's text (one call for the batch, straight into the
    column's buffer) where it is surely ``_encode_attributes``'s, that one's elsewhere."""
    if not ORJSON_AS_JSON:  # pragma: no cover - another orjson
        return pa.array([encode_attributes(v) if good else "{}" for v, good in zip(values, ok, strict=True)],
                        pa.string())
    if not ok.all():
        values = [v if good else _EMPTY for v, good in zip(values, ok.tolist(), strict=True)]
    try:  # one call for the batch, each value followed by a separator value: an orjson call a
        # value made a fresh output buffer each, about one page fault a call (bench/README.md)
        text = orjson.dumps(list(chain.from_iterable(zip(values, repeat(_SEPARATOR)))))
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate: one by one
        return pa.array([encode_attributes(v) for v in values], pa.string())
    out = text[1:-len(_LAST)].split(_SPLIT) if values else []
    if len(out) != len(values):  # a value holds the separator's text itself
        return pa.array([encode_attributes(v) for v in values], pa.string())
    data = b"".join(out)
    if not data.isascii() or any(maybe in data for maybe in _MAYBE_OTHER):
        ends = np.cumsum(np.fromiter(map(len, out), dtype=np.int64, count=len(out)))
        other = np.searchsorted(ends, [m.start() for m in _OTHER.finditer(data)], "right")
        for i in np.unique(other).tolist():
            out[i] = encode_attributes(values[i]).encode()  # ASCII
        data = b"".join(out)
    if len(data) >= 2**31:  # pragma: no cover - beyond a string column's offsets
        return pa.array([b.decode() for b in out], pa.string())
    offsets = np.zeros(len(out) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.fromiter(map(len, out), dtype=np.int64, count=len(out)))
    return pa.StringArray.from_buffers(len(out), pa.py_buffer(offsets), pa.py_buffer(data))


def may_hold(texts: pa.Array, needle: bytes) -> bool:
    """False when no value of the string array ``texts`` holds ``needle``: it is not in the
    array's bytes (one search of the buffer, where ``pc.match_substring`` costs some 0.1-0.2 µs
    a value). True may also be a match across two values' seam, or in bytes outside a slice."""
    data = texts.buffers()[2]
    return data is not None and needle in memoryview(data).tobytes()
