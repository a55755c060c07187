"""How ``ceap`` commands print their results: one rule for every command.

- ``--json``: one JSON document on standard output, the same whether or not
  it is a terminal: an array with one object per row for commands that list
  rows, one object for commands that report totals. Times are ISO 8601.
- Standard output is a terminal: tables for people (rich), wrapped to the
  terminal's width; long values fold onto more lines, nothing is cut.
- Otherwise (a pipe, a file): tab-separated lines, the first one naming the
  columns; no wrapping, no truncation, no colour. A tab, new line or
  carriage return inside a value is written ``\\t``, ``\\n``, ``\\r``; a
  missing value is empty. A command that prints tables of different columns
  separates them with an empty line.

Messages (counts, warnings, progress) go to standard error in every mode, so
standard output holds the results only. A command builds ``Sheet``s and calls
``show``; the decision is made here, once. Rich honours ``TTY_COMPATIBLE=1``
(or ``FORCE_COLOR``) to print tables where standard output is not a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Rich is imported when a table is drawn: ``ceap validate`` draws none
    from rich.console import Console
    from rich.table import Table

_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Column:
    """``key`` heads the tab-separated output; ``label`` the table (default: ``key``)."""

    key: str
    label: str | None = None
    right: bool = False  # numbers, aligned right in tables
    human: Callable[[Any], str] | None = None  # how a table shows a value (default: as is)
    in_table: bool = True  # False: only in tab-separated output (the table's title says it)


@dataclass
class Sheet:
    """Rows of values under columns, printed by ``show``."""

    title: str
    columns: list[Column]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"{self.title}: {len(values)} values for {len(self.columns)} columns")
        self.rows.append(values)

    def table(self) -> Table:
        """The rich table a person sees."""
        from rich.table import Table

        table = Table(title=self.title, title_justify="left")
        shown = [i for i, c in enumerate(self.columns) if c.in_table]
        for i in shown:
            c = self.columns[i]
            table.add_column(c.label or c.key, justify="right" if c.right else "left", overflow="fold")
        for row in self.rows:
            table.add_row(*(_human(self.columns[i], row[i]) for i in shown))
        return table


def _human(column: Column, value: Any) -> str:
    if column.human is not None:
        return column.human(value)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def cell(value: Any) -> str:
    """One value as tab-separated output writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    elif isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, default=json_default, ensure_ascii=False)
    else:
        text = str(value)
    return text.translate(_ESCAPES)


def json_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write by itself: times as ISO 8601, the rest as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def stdout_console() -> Console:
    """A console on the current standard output, as it is now (tests and redirections
    replace it), that never wraps plain text."""
    from rich.console import Console

    return Console(soft_wrap=True)


def write(text: str) -> None:
    """Text on standard output as is: no markup, no wrapping."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def print_json(value: Any) -> None:
    write(json.dumps(value, default=json_default, ensure_ascii=False))


def tsv(sheets: Sequence[Sheet]) -> str:
    """Tab-separated blocks: one header per set of columns, an empty line between blocks."""
    blocks: list[list[str]] = []
    keys: list[str] | None = None
    for sheet in sheets:
        header = [c.key for c in sheet.columns]
        if header != keys:
            blocks.append(["\t".join(header)])
            keys = header
        blocks[-1].extend("\t".join(cell(v) for v in row) for row in sheet.rows)
    return "\n\n".join("\n".join(block) for block in blocks)


def show(sheets: Sheet | Sequence[Sheet], as_json: bool = False, records: Any = None,
         for_people: Callable[[Console], None] | None = None) -> None:
    """Print results by the rule of this module. ``records`` is what ``--json`` prints
    (default: each row as an object keyed by column); ``for_people`` draws a terminal's
    view itself when a plain table is not the best one. No sheet: nothing (but ``--json``)."""
    items = [sheets] if isinstance(sheets, Sheet) else list(sheets)
    if as_json:
        if records is None:
            records = [dict(zip((c.key for c in s.columns), row, strict=True))
                       for s in items for row in s.rows]
        print_json(records)
        return
    if not items:
        return
    console = stdout_console()
    if console.is_terminal:
        if for_people is not None:
            for_people(console)
            return
        for sheet in items:
            console.print(sheet.table())
        return
    write(tsv(items))


__all__ = ["Column", "Sheet", "cell", "json_default", "print_json", "show", "stdout_console", "tsv",
           "write"]
