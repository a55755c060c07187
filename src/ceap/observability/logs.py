"""Structured logs: JSON lines when standard error is not a terminal, text on a terminal.

Every JSON line has ``ts`` (UTC, ISO 8601), ``level``, ``logger`` and ``event`` (the
message), then the record's context fields when it has them (``program``, ``run_id``,
``channel``, ``stream``, ``status``, ``tenant``, counts, ``error`` as an exception
type). Choose with ``--log-format json|text|auto`` or ``CEAP_LOG_FORMAT``; the level
with ``--log-level`` or ``CEAP_LOG_LEVEL`` (default ``warning``).

No personal data: CEAP's own log calls carry ids of runs, deliveries and candidates,
never a customer's id, address, phone number or template variables, and an
exception's text is not logged where it could quote them (only its type), and
tracebacks show frames and exception types, never the exceptions' messages. As a
second guard, every line is scrubbed: e-mail addresses become ``<email>``,
international phone numbers (``+`` and digits) ``<phone>``, and a ``customer_id``
context field is replaced by ``customer_ref``, a keyed hash (``customer_ref()``;
the key is ``CEAP_LOG_HASH_KEY``) that lets lines about one customer be matched
without naming them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

FORMAT_ENV = "CEAP_LOG_FORMAT"
LEVEL_ENV = "CEAP_LOG_LEVEL"
HASH_KEY_ENV = "CEAP_LOG_HASH_KEY"
FORMATS = ("auto", "json", "text")
#: the logger of the progress lines of long-running commands (always at info)
PROGRESS = "ceap.progress"

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+\d[\d\s().\-]{6,}\d")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                            "taskName"}
_handler: logging.Handler | None = None
_json = False


def scrub(text: str) -> str:
    """``text`` with e-mail addresses and international phone numbers masked."""
    if "@" in text:
        text = _EMAIL.sub("<email>", text)
    if "+" in text:
        text = _PHONE.sub("<phone>", text)
    return text


def customer_ref(customer_id: str) -> str:
    """A stable, keyed hash of a customer id, for logs (16 hex digits)."""
    key = os.environ.get(HASH_KEY_ENV, "ceap").encode()
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:16]


def traceback_text(exc_info: Any) -> str:
    """A traceback without the exceptions' messages (they may quote a customer's data):
    the frames (file, line, function, source line) and each exception's type."""
    te: traceback.TracebackException | None = traceback.TracebackException(*exc_info)
    parts: list[str] = []
    while te is not None:
        parts.append("Traceback (most recent call last):\n" + "".join(te.stack.format())
                     + f"{te.exc_type.__qualname__ if te.exc_type else 'Exception'}")
        te = te.__cause__ or (None if te.__suppress_context__ else te.__context__)
    # oldest first, as Python prints a chain
    return "\n\nThe above exception led to the following exception:\n\n".join(reversed(parts))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if key == "customer_id":
            out["customer_ref"] = customer_ref(str(value))
        elif isinstance(value, str):
            out[key] = scrub(value)
        elif value is None or isinstance(value, bool | int | float):
            out[key] = value
        else:
            out[key] = scrub(str(value))
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                  .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        data.update(_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = record.exc_info[0].__name__
            data["traceback"] = scrub(traceback_text(record.exc_info))
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``2026-03-02T07:00:01Z WARNING ceap.delivery.dispatcher: message (program=x ...)``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = _fields(record)
        extra = " (" + " ".join(f"{k}={v}" for k, v in fields.items()) + ")" if fields else ""
        line = f"{ts} {record.levelname} {record.name}: {scrub(record.getMessage())}{extra}"
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + scrub(traceback_text(record.exc_info))
        return line


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def resolve_format(fmt: str | None = None) -> str:
    """``json`` or ``text``: the option, else ``CEAP_LOG_FORMAT``, else by the terminal."""
    chosen = (fmt or os.environ.get(FORMAT_ENV) or "auto").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: expected one of {', '.join(FORMATS)} "
                         f"(--log-format or {FORMAT_ENV})")
    if chosen == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return chosen


def setup_logging(fmt: str | None = None, level: str | None = None) -> str:
    """Send the ``ceap`` loggers to standard error in the chosen format; returns it."""
    global _handler, _json
    chosen = resolve_format(fmt)
    name = (level or os.environ.get(LEVEL_ENV) or "warning").strip().upper()
    if name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"log level {name.lower()!r}: expected debug, info, warning or error "
                         f"(--log-level or {LEVEL_ENV})")
    root = logging.getLogger("ceap")
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = _Stderr()
    _handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root.addHandler(_handler)
    root.setLevel(name)
    logging.getLogger(PROGRESS).setLevel(logging.INFO)
    _json = chosen == "json"
    return chosen


def json_logs() -> bool:
    """Whether ``setup_logging`` chose JSON (then progress lines are log records too)."""
    return _json


def progress(text: str, say: Any, level: int = logging.INFO, **fields: Any) -> None:
    """A progress line of a long-running command: a JSON log record (``logger``
    ``ceap.progress``) in JSON mode, else ``say(text)`` as before."""
    if _json:
        logging.getLogger(PROGRESS).log(level, text, extra=fields)
    else:
        say(text)


__all__ = ["customer_ref", "json_logs", "progress", "scrub", "setup_logging"]
