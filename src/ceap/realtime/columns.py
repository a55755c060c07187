"""The columns of a real-time program's rows, known without an event: ``ceap validate``
checks the columns a program names against them, with the messages the worker's first
micro-batch gives (``ceap.pipeline.plan.Plan.check``). Imports no engine."""

from __future__ import annotations

from typing import Any

from ceap.errors import unknown_column_message
from ceap.spec.program import ProgramSpec
from ceap.sqlsyntax import column_names

#: every row's columns before the declared attributes (``ceap.realtime.features.rows_sql``)
BASE = ("event_id", "tenant_id", "customer_id", "event_type", "event_ts", "attributes")
RUN = ("run_ts", "run_date")


def row_columns(spec: ProgramSpec) -> list[str]:
    """The columns of the program's rows as the worker makes them (before fan-out)."""
    names = list(BASE)
    names += [c for c in spec.source.columns if c != "customer_id"]
    for name, feature in spec.state.items():
        names.append(name)
        if feature.sequence:
            names += [f"{name}_{a}" for a in feature.capture]
    return list(dict.fromkeys(names))


def column_issues(spec: ProgramSpec) -> list[tuple[str, str]]:
    """``("", message)`` for each column the program names that its rows lack; an SQL
    expression outside what :func:`ceap.sqlsyntax.column_names` reads is not checked."""
    if getattr(spec.source, "type", None) != "events":
        return []
    source: Any = spec.source
    rows = row_columns(spec)
    fan_out = source.fan_out

    def known(column: str, names: list[str], exact: bool = False) -> bool:
        if fan_out is not None and (column.startswith("lookup_") or column == fan_out.key):
            return True  # the lookup's columns are known once it is read
        return column in names if exact else column.lower() in {n.lower() for n in names}

    issues: list[tuple[str, str]] = []
    needed = {"source.customer_id": [source.customer_id],
              "source.subject_id": [source.subject_id] if source.subject_id else [],
              "source.context": list(source.context)}
    for field, columns in needed.items():
        missing = [c for c in columns if not known(c, rows, exact=True)]
        if missing:
            issues.append(("", f"{field}: column {missing[0]!r} is not in the source "
                               f"(source has: {', '.join(rows)})"))

    def unknown(where: str, column: str, names: list[str]) -> None:
        issues.append(("", unknown_column_message(where, column, names, events=True)))

    def sql(expr: str, where: str, names: list[str], listed: list[str] | None = None) -> None:
        for column in column_names(expr) or []:
            if not known(column, names):
                unknown(where, column, names if listed is None else listed)
                return

    seen = [*rows, *RUN]
    for name, expr in spec.features.items():
        sql(expr, f"features.{name}", seen, rows)  # the worker lists the rows before features
        seen.append(name)
    for i, f in enumerate(spec.filters):
        text = getattr(f, "expr", None)
        if getattr(f, "type", None) == "expression" and isinstance(text, str):
            sql(text, f"filters[{i}] ({f.id})", seen)
    scorer: Any = spec.scorer
    if scorer is not None and scorer.type == "expression":
        missing = sorted(c for c in scorer.weights or {} if not known(c, seen, exact=True))
        if missing:
            unknown("scorer.weights", missing[0], seen)
        if scorer.expr is not None:
            sql(scorer.expr, "scorer.expr", seen)
    missing = sorted(c for c in spec.action.payload_columns if not known(c, seen, exact=True))
    if missing:
        unknown("action.payload_columns", missing[0], seen)
    return issues
