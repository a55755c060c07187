"""A small micro-batch's scored rows made without the query (``ceap.realtime.smallrows``)
equal the query's, column for column, type for type and in order, on random micro-batches
of five program shapes (counts, a sequence with a capture, ``time_since`` with nulls,
integer and double scores, ``IN``, ``CASE``, ``least``); rows it does not make (a customer
id that ``trim`` could empty, an attribute that is a number, escapes in the JSON, a
duplicated key, more than ``MAX_ROWS`` rows) go to the query, with the same result."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ceap.plugin import PluginContext
from ceap.realtime import smallrows
from ceap.realtime.engine import SCORED, ProgramRunner
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.features import FRESH, rows_for
from ceap.spec.loading import parse_program
from ceap.store import open_store

T0 = datetime(2026, 11, 20, 10, 0)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "name": "p", "source": {"type": "events", "on": ["app_crash"],
                            "columns": {"app_version": "string", "app": "string"}},
    "state": {"crashes": {"count": "app_crash", "window": "30m"}},
    "filters": [{"id": "repeated", "expr": "crashes >= 2"},
                {"id": "version", "expr": "app_version <> '4.0.0'"}],
    "scorer": {"type": "expression", "expr": "least(1.0, 0.1 + crashes / 10.0)"},
    "selection": {"threshold": 0.2},
    "action": {"type": "alert", "channels": ["email"], "payload_columns": ["crashes", "app"]},
}
SHAPES: dict[str, dict[str, Any]] = {
    "bench": {},
    "sequence": {
        "state": {"crashes": {"count": "app_crash", "window": "1h"},
                  "login_crash": {"sequence": {"first": "login", "then": "app_crash"}, "within": "20m",
                                  "capture": ["country"]},
                  "since_login": {"time_since": "login"}},
        "filters": [{"id": "f", "expr": "login_crash OR since_login IS NULL OR since_login > 600.5"}],
        "scorer": {"type": "expression",
                   "expr": "CASE WHEN login_crash THEN 0.9 ELSE least(1.0, crashes / 4.0) END"}},
    "int_score": {"filters": [{"id": "f", "expr": "app IN ('ios', 'web') AND NOT (app_version = '4.0.0')"}],
                  "scorer": {"type": "expression", "expr": "crashes * 2 - 1"}},
    "null_logic": {"filters": [{"id": "f", "expr": "app_version IS NULL OR app_version < '5'"},
                               {"id": "g", "expr": "crashes BETWEEN 1 AND 4"}],
                   "scorer": {"type": "expression", "expr": "greatest(0.25, crashes / 3.0, NULL)"}},
    "no_filters": {"filters": [],
                   "scorer": {"type": "expression", "expr": "crashes + 0.5 * CAST(crashes AS DOUBLE)"}},
}


def _spec(shape: str) -> Any:
    return parse_program({**BASE, **SHAPES[shape]})


def _combined(seed: int, n: int, odd: bool) -> pa.Table:
    """History and a micro-batch (``FRESH``) of a few customers; with ``odd``, a few values
    the Python way does not make (see the module's docstring)."""
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {name: [] for name in [*EVENT_SCHEMA.names, FRESH]}
    for k in range(n):
        etype = rng.choice(["app_crash", "app_crash", "login", "page_view"])
        attrs: dict[str, Any] = {}
        for key, values in (("app", ["ios", "web", "tv", None]), ("app_version", ["4.0.0", "5.1", "5.2.1"]),
                            ("country", ["US", "GB"])):
            if rng.random() < 0.85:
                attrs[key] = rng.choice(values)
        text = json.dumps(attrs, separators=(",", ":"))
        customer: str | None = f"C{rng.randrange(8)}"
        if odd and rng.random() < 0.1:
            choice = rng.randrange(5)
            if choice == 0:
                customer = rng.choice([None, " C1", "C2\t", ""])
            elif choice == 1:
                text = json.dumps({**attrs, "app": rng.choice([7, 1.5, True, ["x"]])})
            elif choice == 2:
                text = json.dumps({**attrs, "app": "caf\u00e9"})  # an escape in the text
            elif choice == 3:
                text = text[:-1] + (',' if len(text) > 2 else '') + '"app":"dup"}'  # a key twice
            else:
                text = json.dumps({**attrs, "app": 'q"uote'})
        rows["event_id"].append(f"e{k:04d}")
        rows["tenant_id"].append("default")
        rows["customer_id"].append(customer)
        rows["type"].append(etype)
        rows["ts"].append(T0 + timedelta(seconds=rng.randrange(0, 7200, rng.choice([1, 60]))))
        rows["attributes"].append(text)
        rows[FRESH].append(rng.random() < 0.4)
    return pa.table(rows, schema=EVENT_SCHEMA.append(pa.field(FRESH, pa.bool_())))


def _runner(tmp_path: Path, shape: str) -> ProgramRunner:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    spec = _spec(shape)
    runner = ProgramRunner(spec, PluginContext(base_dir=tmp_path, store=store), store)
    first = rows_for(runner.con, _combined(0, 50, False), spec.state, spec.source.on,  # type: ignore[attr-defined]
                     dict(spec.source.columns))  # type: ignore[attr-defined]
    runner._rows_schema = first.schema  # as after the first micro-batch, made the plain way
    runner.plan.check(first.schema)
    runner._checked = True
    return runner


def _both(runner: ProgramRunner, combined: pa.Table) -> tuple[pa.Table, pa.Table, bool]:
    """The query's rows, the rows with ``SmallRows`` allowed, and whether it made them."""
    small = runner._small
    runner._small = False
    expected, stage = runner._fused_rows(combined, NOW)
    runner._small = small
    made: list[bool] = []
    if isinstance(small, smallrows.SmallRows):
        original = small.rows

        def spy(*args: Any) -> Any:
            out = original(*args)
            made.append(out is not None)
            return out
        small.rows = spy  # type: ignore[method-assign]
    got, stage_got = runner._fused_rows(combined, NOW)
    assert stage == stage_got == SCORED
    return expected, got, any(made)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_small_rows_equal_the_querys(shape: str, tmp_path: Path) -> None:
    runner = _runner(tmp_path, shape)
    runner._fused_rows(_combined(1, 30, False), NOW)  # the query's first result builds SmallRows
    assert isinstance(runner._small, smallrows.SmallRows)
    made = kept = scored = 0
    for seed in range(40):
        combined = _combined(seed, random.Random(seed).randrange(5, 120), odd=seed % 2 == 1)
        expected, got, by_python = _both(runner, combined)
        assert got.schema == expected.schema
        assert got.to_pylist() == expected.to_pylist()
        made += by_python
        flags = [c for c in got.column_names if c.startswith("__ceap_k")]
        kept += sum(all(r[f] for f in flags) for r in got.to_pylist())
        scored += sum(r.get("__ceap_score") is not None for r in got.to_pylist())
    assert made >= 15  # most micro-batches were made without the query
    assert kept > 0 and scored > 0
    runner.close()


def test_what_is_not_made_here_goes_to_the_query(tmp_path: Path) -> None:
    runner = _runner(tmp_path, "bench")
    runner._fused_rows(_combined(1, 30, False), NOW)
    combined = _combined(3, 40, False)
    texts = combined.column("attributes").to_pylist()
    customers = combined.column("customer_id").to_pylist()
    fresh = combined.column(FRESH).to_pylist()
    crash = next(i for i, (t, f) in enumerate(zip(combined.column("type").to_pylist(), fresh, strict=True))
                 if t == "app_crash" and f)
    for change in ("space", "number", "escape", "dup", None):
        t, c = list(texts), list(customers)
        if change == "space":
            c[crash] = "C1 "
        elif change == "number":
            t[crash] = json.dumps({"app": 3, "app_version": "5.1"})
        elif change == "escape":
            t[crash] = json.dumps({"app": "caf\u00e9"})
        elif change == "dup":
            t[crash] = '{"app":"ios","app":"web"}'
        table = combined.set_column(combined.schema.get_field_index("attributes"), "attributes", pa.array(t))
        table = table.set_column(table.schema.get_field_index("customer_id"), "customer_id", pa.array(c))
        expected, got, by_python = _both(runner, table)
        assert got.to_pylist() == expected.to_pylist()
        assert by_python == (change is None)
    runner.close()


@pytest.mark.parametrize("extra", [0, 1])
def test_at_most_max_rows_are_made_here(extra: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smallrows, "MAX_ROWS", 20)
    runner = _runner(tmp_path, "bench")
    runner._fused_rows(_combined(1, 30, False), NOW)
    combined = _combined(5, 200, False)
    crashes = [i for i, t in enumerate(combined.column("type").to_pylist()) if t == "app_crash"]
    # the rows: the fresh crashes and the logged ones after them
    marks = [i in crashes[:20 + extra] for i in range(combined.num_rows)]
    history = [i in crashes[:20 + extra] or t != "app_crash" for i, t in
               enumerate(combined.column("type").to_pylist())]
    table = combined.filter(pa.array(history)).set_column(
        combined.schema.get_field_index(FRESH), FRESH,
        pa.array([m for m, h in zip(marks, history, strict=True) if h]))
    expected, got, by_python = _both(runner, table)
    assert expected.num_rows >= 20 + extra
    assert got.to_pylist() == expected.to_pylist()
    assert by_python == (expected.num_rows <= 20)
    runner.close()


def test_programs_it_does_not_make_keep_the_query(tmp_path: Path) -> None:
    for change in ({"filters": [{"id": "f", "expr": "CAST(crashes AS INTEGER) > 1"}]},
                   {"source": {**BASE["source"], "columns": {"app_version": "string", "app": "int"}}},
                   {"scorer": {"type": "expression", "expr": "abs(crashes - 3)"}}):
        SHAPES["changed"] = change
        try:
            runner = _runner(tmp_path, "changed")
            runner._fused_rows(_combined(1, 30, False), NOW)
            assert runner._small is False
            runner.close()
        finally:
            del SHAPES["changed"]
