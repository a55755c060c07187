"""What the docs state precisely enough to compute by hand, checked against the code:
the experiment draws' one-liners (docs/experiments.md) against the SQL the runs use;
quarantine reasons and NaN, top-k ties, and where relative database paths start
(docs/program-spec.md)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ceap.connectors.sql import SqlConnector
from ceap.errors import SourceError
from ceap.experiments.assignment import VariantSql, global_control_sql, holdout_sql
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.spec import parse_program
from ceap.store import Store, open_store

DOCS = Path(__file__).resolve().parent.parent / "docs"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def documented_draws() -> str:
    """The Python block of docs/experiments.md#assignment."""
    text = (DOCS / "experiments.md").read_text()
    part = text[text.index("## Assignment"):text.index("\n## ", text.index("## Assignment") + 1)]
    [block] = re.findall(r"```python\n(.*?)```", part, re.S)
    return block


def test_the_documented_one_liners_draw_what_the_sql_draws() -> None:
    ids = [f"c{i:05d}" for i in range(3000)] + ["élodie@example.com", "客户-7", "a:b", " ", "ÿ" * 40]
    tenant, program, share, holdout = "acme", "promo", 0.3, 0.2
    code = compile(documented_draws(), "docs/experiments.md", "exec")
    by_docs = []
    for customer in ids:
        names = {"tenant": tenant, "program": program, "customer": customer, "share": share,
                 "holdout": holdout}
        exec(code, names)
        by_docs.append((names["in_global_control"], names["in_holdout"], names["variant_draw"]))
    con = duckdb.connect()
    con.register("ids", pa.table({"customer": ids}))
    variant = VariantSql([], [], "customer").draw()
    by_sql = con.execute(
        f"SELECT {global_control_sql('customer')}, {holdout_sql('customer')}, {variant} FROM ids",
        {"tenant": tenant, "program": program, "holdout": holdout, "global_control": share}).fetchall()
    assert by_docs == [tuple(row) for row in by_sql]
    assert 0.25 < sum(g for g, _, _ in by_docs) / len(ids) < 0.35  # the draws are spread


def test_the_first_sixteen_hex_digits_are_not_the_hash() -> None:
    """The reading the docs warn against puts other customers in the holdout."""
    keys = [f"acme:promo:c{i:05d}" for i in range(500)]
    little = [int.from_bytes(hashlib.md5(k.encode()).digest()[:8], "little") / 2**64 < 0.5 for k in keys]
    hex_reading = [int(hashlib.md5(k.encode()).hexdigest()[:16], 16) / 2**64 < 0.5 for k in keys]
    con = duckdb.connect()
    sql = [r[0] for r in con.execute("SELECT md5_number_upper(k) / 18446744073709551616.0 < 0.5 "
                                     "FROM unnest(?) AS t(k)", [keys]).fetchall()]
    assert sql == little
    assert sum(a != b for a, b in zip(sql, hex_reading, strict=True)) > 100


# -- program-spec.md: quarantine, ties, sql sources ----------------------------------------


def run_rows(tmp_path: Path, csv: str, **overrides: Any) -> tuple[Any, Store]:
    """Run a program over ``csv`` (written as data.csv) in a project at ``tmp_path``."""
    (tmp_path / "data.csv").write_text(csv)
    spec = {"name": "p", "source": {"type": "csv", "path": "data.csv"},
            "action": {"type": "inform", "channels": ["inapp"]}, **overrides}
    spec["source"] = {**spec["source"], "max_bad_share": 1.0}
    context = PluginContext(base_dir=tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}", context=context)
    return run_program(parse_program(spec), store, context, now=NOW), store


def stored(store: Store) -> set[str]:
    return {c.customer_id for c in store.candidates(CandidateQuery(limit=100, include_expired=True))}


def quarantined(store: Store, result: Any) -> dict[str, str]:
    return {json.loads(q["row"])["customer_id"]: q["reason"]
            for q in store.quarantined("default", result.run.run_id)}


def test_nan_in_a_declared_float_column_is_quarantined(tmp_path: Path) -> None:
    result, store = run_rows(
        tmp_path, "customer_id,spend,visits\nc1,80,1\nc2,nan,2\nc3,NaN,3\nc4,inf,4\nc5,20,nan\n",
        source={"type": "csv", "path": "data.csv", "columns": {"spend": "float"}},
        filters=[{"id": "spend_50", "expr": "spend >= 50"}])
    assert quarantined(store, result) == {"c2": "column spend: not a valid float (NaN)",
                                          "c3": "column spend: not a valid float (NaN)"}
    assert result.funnel.filters == {"spend_50": 1}  # c5 (20); an infinity is a number
    assert stored(store) == {"c1", "c4"}
    store.close()


def test_nan_already_in_a_float_column_is_quarantined_when_declared(tmp_path: Path) -> None:
    pq.write_table(pa.table({"customer_id": ["c1", "c2"], "spend": [80.0, float("nan")]}),
                   tmp_path / "rows.parquet")
    result, store = run_rows(tmp_path, "unused\n", source={
        "type": "parquet", "path": "rows.parquet", "columns": {"spend": "float"}})
    assert quarantined(store, result) == {"c2": "column spend: not a valid float (NaN)"}
    store.close()


def test_an_undeclared_nan_is_not_checked_and_passes_a_filter(tmp_path: Path) -> None:
    """The documented rule for columns the program does not declare."""
    pq.write_table(pa.table({"customer_id": ["c1", "c2"], "spend": [80.0, float("nan")]}),
                   tmp_path / "rows.parquet")
    result, store = run_rows(tmp_path, "unused\n", source={"type": "parquet", "path": "rows.parquet"},
                             filters=[{"id": "spend_50", "expr": "spend >= 50"}],
                             scorer={"type": "expression", "weights": {"spend": 1.0}})
    assert result.funnel.quarantined == 0 and result.funnel.filters == {"spend_50": 0}
    assert (result.funnel.unscored, result.funnel.selected) == (1, 1)
    store.close()


@pytest.mark.parametrize("columns", [{"signup": "date", "spend": "float"},
                                     {"spend": "float", "signup": "date"}])
def test_a_row_with_two_problems_keeps_the_first_declared(tmp_path: Path,
                                                          columns: dict[str, str]) -> None:
    result, store = run_rows(tmp_path, "customer_id,spend,signup\nc1,lots,someday\n,x,y\n",
                             source={"type": "csv", "path": "data.csv", "columns": columns})
    first = next(iter(columns))
    assert quarantined(store, result)["c1"] == f"column {first}: not a valid {columns[first]}"
    [missing] = [q["reason"] for q in store.quarantined("default", result.run.run_id)
                 if json.loads(q["row"])["customer_id"] is None]
    assert missing == "customer id (customer_id) is missing"  # the customer id comes first
    store.close()


def test_top_k_ties_go_to_the_lower_customer_id_as_text(tmp_path: Path) -> None:
    ids = ["c9", "c10", "a", "B", "c2"]
    csv = "customer_id,s\n" + "".join(f"{i},1\n" for i in ids)
    result, store = run_rows(tmp_path, csv, scorer={"type": "expression", "expr": "s"},
                             selection={"top_k": 3})
    assert stored(store) == set(sorted(ids)[:3]) == {"B", "a", "c10"}  # byte order: c10 before c2 and c9
    assert result.funnel.over_top_k == 2
    store.close()


def test_relative_database_urls_start_at_the_project_folder(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data" / "orders").mkdir(parents=True)
    elsewhere.mkdir()
    with sqlite3.connect(project / "data" / "shop.db") as conn:
        conn.execute("CREATE TABLE t (customer_id TEXT)")
        conn.execute("INSERT INTO t VALUES ('c1')")
    for i in range(2):
        pq.write_table(pa.table({"customer_id": [f"p{i}"], "x": [i]}),
                       project / "data" / "orders" / f"part-{i}.parquet")
    monkeypatch.chdir(elsewhere)
    context = PluginContext(base_dir=project)

    def rows(config: dict[str, Any]) -> list[dict[str, Any]]:
        connector = SqlConnector.from_dict({"type": "sql", **config}, context)
        schema = connector.schema()
        table = pa.Table.from_batches(list(connector.read()), schema)
        return table.sort_by("customer_id").to_pylist()

    assert rows({"connection": "sqlite:///data/shop.db", "table": "t"}) == [{"customer_id": "c1"}]
    assert rows({"connection": "duckdb://", "query": "SELECT * FROM read_parquet('data/orders/*.parquet')"}) \
        == [{"customer_id": "p0", "x": 0}, {"customer_id": "p1", "x": 1}]


def test_duckdb_database_files_are_read_only(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "shop.duckdb")) as con:
        con.execute("CREATE TABLE orders AS SELECT 'c' || i AS customer_id, i AS n FROM range(5) t(i)")
    context = PluginContext(base_dir=tmp_path)
    connector = SqlConnector.from_dict({"type": "sql", "connection": "duckdb:///shop.duckdb",
                                        "table": "orders", "batch_rows": 2}, context)
    batches = list(connector.read())
    assert [b.num_rows for b in batches] == [2, 2, 1] and connector.schema() == batches[0].schema
    writer = SqlConnector.from_dict({"type": "sql", "connection": "duckdb:///shop.duckdb",
                                     "query": "DELETE FROM orders RETURNING *"}, context)
    with pytest.raises(SourceError, match="read-only"):
        list(writer.read())
    with pytest.raises(SourceError, match="source.connection: cannot connect"):
        SqlConnector.from_dict({"type": "sql", "connection": "duckdb:///nope.duckdb", "table": "t"},
                               context).schema()
