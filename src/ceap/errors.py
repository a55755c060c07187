"""Errors CEAP raises; each names the file, field or column at fault."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CeapError(Exception):
    """Base class of every error CEAP raises on purpose."""

    #: the run record, when the error ended a program run (it is in the store as failed)
    run: Any = None


class SpecError(CeapError):
    """A program spec or project config is invalid.

    ``issues`` holds ``(location, message)`` pairs; ``str()`` gives one
    ``file: location: message`` line per issue.
    """

    def __init__(self, source: str, issues: Iterable[tuple[str, str]]):
        self.source = source
        self.issues = list(issues)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {loc}: {msg}" if loc else f"{self.source}: {msg}"
                for loc, msg in self.issues]


class PluginError(CeapError):
    """A plugin is missing, malformed or failed to load."""


class SourceError(CeapError):
    """A source cannot be read: missing file, missing column, wrong type."""


class RunError(CeapError):
    """A run was refused or aborted; nothing was written."""


def unknown_column_message(where: str, column: str, names: Iterable[str], events: bool) -> str:
    """``where: unknown column 'x' (the rows have: ...)``; for a real-time program's rows
    (``events``), how an event attribute becomes a column."""
    visible = [c for c in names if not c.startswith("__ceap")]
    text = f"{where}: unknown column {column!r} (the rows have: {', '.join(visible)})"
    if events:
        text += (f"; an event attribute is a column only when declared in source.columns "
                 f"({column}: string, ...)")
    return text
