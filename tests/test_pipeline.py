"""Batch runs end to end on the embedded store: funnel, quarantine, atomicity,
dedup, holdout, selection, modes, and failure isolation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ceap.errors import CeapError, RunError, SourceError
from ceap.model import CandidateQuery, RunRecord, WriteResult
from ceap.plugin import PluginContext
from ceap.registry import Registry, default_registry
from ceap.runtime import run_program, run_programs
from ceap.scorers.base import Scorer, ScorerConfig
from ceap.spec import parse_program
from ceap.store import Store, open_store
from ceap.store.sqlite import SqliteStore
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(sqlite_url: str) -> Store:
    return open_store(sqlite_url)


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)


def all_candidates(store: Store, **kw: Any) -> list[Any]:
    return store.candidates(CandidateQuery(limit=10_000, include_expired=True, **kw))


def test_funnel_counts_every_stage(orders: Path, store: Store, context: PluginContext) -> None:
    result = run_program(parse_program(base_program()), store, context, now=NOW)
    f = result.funnel
    assert (f.read, f.quarantined) == (7, 2)
    assert f.filters == {"big_cart": 1, "us_only": 1}
    assert f.eligible == 3
    assert f.duplicate_customer == 1  # c1 has two rows; its best one is kept
    assert (f.selected, f.written, f.already_present) == (2, 2, 0)
    found = {c.customer_id: c for c in all_candidates(store)}
    assert set(found) == {"c1", "c5"}
    c1 = found["c1"]
    assert c1.subject_id == "p7" and c1.payload == {"discount": 10, "cart_value": 90.0}
    assert c1.context == {"marketplace": "us"}
    assert c1.channels == ["email"] and c1.action_type == "offer" and c1.status == "pending"
    assert c1.created_at == NOW and c1.not_before == NOW
    assert c1.expires_at == NOW + timedelta(days=7)
    assert c1.tenant_id == "default" and c1.model == "expression" and c1.version == 1
    stored = store.runs("default")[0]
    assert stored.status == "succeeded" and stored.funnel["written"] == 2


def test_bad_rows_are_quarantined_with_reasons(orders: Path, store: Store,
                                               context: PluginContext) -> None:
    result = run_program(parse_program(base_program()), store, context, now=NOW)
    bad = store.quarantined("default", result.run.run_id)
    reasons = sorted(b["reason"] for b in bad)
    assert reasons == ["column signup: not a valid date", "customer id (customer_id) is missing"]
    rows = [json.loads(b["row"]) for b in bad]
    assert {r["product_id"] for r in rows} == {"p4", "p5"}


def test_too_many_bad_rows_fails_the_run_and_writes_nothing(
    orders: Path, store: Store, context: PluginContext
) -> None:
    spec = base_program()
    spec["source"]["max_bad_share"] = 0.1
    with pytest.raises(RunError, match=r"2 of 7 rows are bad .* nothing was written"):
        run_program(parse_program(spec), store, context, now=NOW)
    assert all_candidates(store) == []
    run = store.runs("default")[0]
    assert run.status == "failed" and "max_bad_share" in (run.error or "")
    assert store.quarantined("default", run.run_id) == []


def test_filter_on_missing_column_names_filter_and_column(
    orders: Path, store: Store, context: PluginContext
) -> None:
    spec = base_program(filters=[{"id": "big_cart", "expr": "cart_valu > 50"}])
    with pytest.raises(SourceError) as exc:
        run_program(parse_program(spec), store, context, now=NOW)
    assert "filters[0] (big_cart): unknown column 'cart_valu'" in str(exc.value)
    assert "cart_value" in str(exc.value)  # lists what the rows have
    assert all_candidates(store) == []


def test_missing_source_file_is_named(store: Store, context: PluginContext) -> None:
    with pytest.raises(SourceError, match="source.path: no file matches 'orders.csv'"):
        run_program(parse_program(base_program()), store, context, now=NOW)


def test_declared_column_missing_from_source(orders: Path, store: Store,
                                             context: PluginContext) -> None:
    spec = base_program()
    spec["source"]["columns"]["loyalty"] = "int"
    with pytest.raises(SourceError, match="source.columns: column 'loyalty' is not in the source"):
        run_program(parse_program(spec), store, context, now=NOW)


def test_column_of_an_impossible_type_is_named(tmp_path: Path, store: Store,
                                               context: PluginContext) -> None:
    (tmp_path / "rows.jsonl").write_text(
        '{"customer_id": "a", "cart_value": {"amount": 3}}\n'
        '{"customer_id": "b", "cart_value": {"amount": 4}}\n')
    spec = base_program(source={"type": "jsonl", "path": "rows.jsonl",
                                "columns": {"cart_value": "float"}},
                        filters=[], scorer=None)
    spec["action"]["payload_columns"] = []
    with pytest.raises(SourceError, match="source.columns.cart_value"):
        run_program(parse_program(spec), store, context, now=NOW)


def test_scorer_feature_missing_is_named(orders: Path, store: Store, context: PluginContext) -> None:
    """The error names the config field the column was written in, not a method."""
    spec = base_program(scorer={"type": "expression", "weights": {"basket": 1.0}})
    with pytest.raises(SourceError, match=r"^scorer\.weights: unknown column 'basket' \(the rows have: "):
        run_program(parse_program(spec), store, context, now=NOW)


@pytest.mark.parametrize(("config", "where"), [
    ({"type": "expression", "weights": {"cart_value": 1.0}}, "scorer"),
    ({"type": "expression", "expr": "2 * vendor_scor + cart_value"}, "scorer.expr"),
    ({"type": "item_affinity", "model": "m.npz", "customer": "cust"}, "scorer.customer"),
    ({"type": "lightgbm", "model": "m.txt", "features": ["cart_value", "vendor_scor"]}, "scorer.features"),
    ({"type": "lightgbm", "model": "m.txt"}, "scorer.model"),
])
def test_config_field_names_where_a_column_was_written(config: dict[str, object], where: str) -> None:
    from ceap.pipeline.plan import config_field
    from ceap.registry import default_registry

    cls = default_registry().get("scorer", config["type"])  # type: ignore[arg-type]
    column = {"scorer.customer": "cust", "scorer.model": "f0"}.get(where, "vendor_scor")
    assert config_field("scorer", cls.config_model.model_validate(config), column) == where


def test_rerun_in_the_same_window_adds_no_duplicates(
    orders: Path, store: Store, context: PluginContext
) -> None:
    program = parse_program(base_program())
    first = run_program(program, store, context, now=NOW)
    again = run_program(program, store, context, now=NOW + timedelta(hours=3))
    assert (first.funnel.written, again.funnel.written, again.funnel.already_present) == (2, 0, 2)
    assert len(all_candidates(store)) == 2
    next_day = run_program(program, store, context, now=NOW + timedelta(days=1))
    assert next_day.funnel.written == 2
    assert len(all_candidates(store)) == 4


class FailingStore(SqliteStore):
    """Fails after the candidates are inserted, inside the run's transaction."""

    def _insert_run(self, run: RunRecord) -> None:
        if run.status == "succeeded":
            raise RuntimeError("disk full")
        super()._insert_run(run)


def test_a_run_is_atomic(orders: Path, sqlite_url: str, context: PluginContext) -> None:
    store = FailingStore.from_dict({"type": "sqlite", "url": sqlite_url})
    store.migrate()
    with pytest.raises(CeapError, match="disk full"):
        run_program(parse_program(base_program()), store, context, now=NOW)
    assert all_candidates(store) == []
    assert store.runs("default")[0].status == "failed"


def customers_table(n: int) -> pa.Table:
    return pa.table({"customer_id": [f"c{i:05d}" for i in range(n)],
                     "value": [float(i % 100) for i in range(n)]})


def holdout_program(name: str = "h", holdout: float = 0.2, **kw: Any) -> dict[str, Any]:
    return {"name": name,
            "source": {"type": "parquet", "path": "customers.parquet"},
            "scorer": {"type": "expression", "expr": "value / 100"},
            "action": {"type": "inform", "channels": ["inapp"]},
            "experiment": {"holdout": holdout}, **kw}


def test_holdout_is_deterministic_and_close_to_its_share(
    tmp_path: Path, sqlite_url: str, context: PluginContext
) -> None:
    pq.write_table(customers_table(4000), tmp_path / "customers.parquet")
    first = open_store(sqlite_url)
    result = run_program(parse_program(holdout_program()), first, context, now=NOW)
    held = {c.customer_id for c in all_candidates(first) if c.holdout}
    assert all(c.status == "held_out" for c in all_candidates(first) if c.holdout)
    assert result.funnel.held_out == len(held)
    assert 0.17 < len(held) / 4000 < 0.23  # 0.2 +- 5 standard deviations
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    run_program(parse_program(holdout_program()), other, context, now=NOW + timedelta(days=3))
    assert {c.customer_id for c in all_candidates(other) if c.holdout} == held
    run_program(parse_program(holdout_program(name="another")), other, context, now=NOW)
    assert {c.customer_id for c in all_candidates(other, program="another") if c.holdout} != held


def test_threshold_top_k_and_one_per_customer(tmp_path: Path, store: Store,
                                             context: PluginContext) -> None:
    pq.write_table(customers_table(300), tmp_path / "customers.parquet")
    spec = holdout_program(holdout=0.0, selection={"threshold": 0.5, "top_k": 10})
    result = run_program(parse_program(spec), store, context, now=NOW)
    found = all_candidates(store)
    assert len(found) == 10 and result.funnel.over_top_k > 0
    # values repeat every 100 customers: the three 0.99s, 0.98s and 0.97s, then one 0.96
    assert sorted((c.score for c in found), reverse=True) == [0.99] * 3 + [0.98] * 3 + [0.97] * 3 + [0.96]
    assert result.funnel.below_threshold == 150  # values 0..49 of each hundred


def test_shadow_mode_stores_but_marks_shadow(tmp_path: Path, store: Store,
                                             context: PluginContext) -> None:
    pq.write_table(customers_table(20), tmp_path / "customers.parquet")
    run_program(parse_program(holdout_program(holdout=0.0, mode="shadow")), store, context, now=NOW)
    assert {c.status for c in all_candidates(store)} == {"shadow"}


def test_paused_program_is_skipped_and_recorded(tmp_path: Path, store: Store,
                                                context: PluginContext) -> None:
    result = run_program(parse_program(holdout_program(mode="paused")), store, context, now=NOW)
    assert result.run.status == "skipped" and all_candidates(store) == []
    assert store.runs("default")[0].status == "skipped"


def test_one_failing_program_does_not_stop_the_others(
    tmp_path: Path, store: Store, context: PluginContext
) -> None:
    pq.write_table(customers_table(20), tmp_path / "customers.parquet")
    broken = parse_program(holdout_program(name="broken", filters=[{"id": "f", "expr": "nope > 1"}]))
    fine = parse_program(holdout_program(name="fine", holdout=0.0))
    results = run_programs([broken, fine], store, context, now=NOW)
    assert [(r.program, r.ok) for r in results] == [("broken", False), ("fine", True)]
    assert "unknown column 'nope'" in (results[0].error or "")
    assert len(all_candidates(store, program="fine")) == 20


def test_features_see_run_date_and_delay_sets_not_before(
    orders: Path, store: Store, context: PluginContext
) -> None:
    spec = base_program(
        features={"days_since_signup": "date_diff('day', signup, run_date)"},
        filters=[{"id": "big_cart", "expr": "cart_value > 50"},
                 {"id": "us_only", "expr": "country = 'US'"},
                 {"id": "old_enough", "expr": "days_since_signup > 1055"}],
        action={"type": "offer", "channels": ["email"], "delay": "1h", "expiry": "2d"})
    run_program(parse_program(spec), store, context, now=NOW)
    found = all_candidates(store)
    # 2024-01-01 is 1059 days before 2026-11-25; 2024-01-05 is 1055 days
    assert {c.customer_id for c in found} == {"c1"}
    assert found[0].not_before == NOW + timedelta(hours=1)
    assert found[0].expires_at == NOW + timedelta(hours=1, days=2)


def test_expressions_cannot_read_files(orders: Path, store: Store, context: PluginContext) -> None:
    spec = base_program(filters=[{"id": "sneaky",
                                  "expr": "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0"}])
    with pytest.raises(SourceError, match="filters\\[0\\] \\(sneaky\\)"):
        run_program(parse_program(spec), store, context, now=NOW)


def test_tenant_scopes_every_record(orders: Path, store: Store, tmp_path: Path) -> None:
    acme = PluginContext(base_dir=tmp_path, tenant="acme")
    run_program(parse_program(base_program()), store, acme, now=NOW)
    assert all_candidates(store) == []  # the default tenant sees nothing
    assert {c.tenant_id for c in all_candidates(store, tenant_id="acme")} == {"acme"}


def test_sweep_removes_expired_candidates(orders: Path, store: Store, context: PluginContext) -> None:
    run_program(parse_program(base_program()), store, context, now=NOW)
    assert store.sweep_expired(NOW + timedelta(days=6)) == 0
    assert store.sweep_expired(NOW + timedelta(days=7, seconds=1)) == 2
    assert all_candidates(store) == []


def test_customer_lookup_skips_expired_by_default(orders: Path, store: Store,
                                                  context: PluginContext) -> None:
    run_program(parse_program(base_program()), store, context, now=datetime.now(UTC) - timedelta(days=8))
    assert store.candidates(CandidateQuery(customer_id="c1")) == []
    assert len(store.candidates(CandidateQuery(customer_id="c1", include_expired=True))) == 1


def test_write_result_counts(orders: Path, store: Store, context: PluginContext) -> None:
    result = run_program(parse_program(base_program()), store, context, now=NOW)
    assert result.written == WriteResult(inserted=2, duplicates=0, quarantined=2)


class ExplainingConfig(ScorerConfig):
    type: Literal["explaining"] = "explaining"


class ExplainingScorer(Scorer[ExplainingConfig]):
    """Scores ``value / 100``; explains with the value; recommends two items."""

    config_model: ClassVar[type[ScorerConfig]] = ExplainingConfig

    def features(self) -> list[str]:
        return ["value"]

    def score(self, table: pa.Table) -> np.ndarray:
        return table.column("value").to_numpy() / 100

    def explain(self, table: pa.Table, top: int = 3) -> list[dict[str, float]]:
        return [{"value": v} for v in table.column("value").to_pylist()]

    def recommend(self, table: pa.Table, k: int) -> list[list[dict[str, Any]]]:
        return [[{"item": f"{c}-a", "score": 0.9}, {"item": f"{c}-b", "score": 0.5}][:k]
                for c in table.column("customer_id").to_pylist()]


def test_selected_candidates_carry_reasons_and_items(tmp_path: Path, store: Store,
                                                     context: PluginContext) -> None:
    pq.write_table(customers_table(50), tmp_path / "customers.parquet")
    registry = Registry()
    base = default_registry()
    for kind in ("connector", "filter", "scorer"):
        for name in base.names(kind):
            registry.register(kind, name, base.get(kind, name))
    registry.register("scorer", "explaining", ExplainingScorer)
    spec = holdout_program(holdout=0.0, scorer={"type": "explaining"},
                           selection={"top_k": 3, "reasons": 1},
                           action={"type": "recommend", "channels": ["email"], "items": 1,
                                   "payload": {"discount": 5}})
    run_program(parse_program(spec, registry=registry), store, context, now=NOW, registry=registry)
    found = all_candidates(store)
    assert len(found) == 3
    for c in found:
        assert c.reasons == {"value": c.score * 100}
        assert c.payload == {"discount": 5, "items": [{"item": f"{c.customer_id}-a", "score": 0.9}]}


def test_a_filter_sees_only_rows_earlier_filters_kept(tmp_path: Path, store: Store,
                                                      context: PluginContext) -> None:
    write_csv(tmp_path / "codes.csv", "customer_id,code", ["a,12", "b,x7", "c,40"])
    spec = {"name": "codes", "source": {"type": "csv", "path": "codes.csv"},
            "filters": [{"id": "numeric", "expr": "regexp_full_match(code, '[0-9]+')"},
                        {"id": "big", "expr": "CAST(code AS INTEGER) > 20"}],
            "action": {"type": "inform", "channels": ["inapp"]}}
    result = run_program(parse_program(spec), store, context, now=NOW)
    assert result.funnel.filters == {"numeric": 1, "big": 1}
    assert [c.customer_id for c in all_candidates(store)] == ["c"]
    spec["filters"] = spec["filters"][1:]  # without the guard, the cast fails on 'x7'
    with pytest.raises(SourceError, match=r"filters\[0\] \(big\): Conversion Error"):
        run_program(parse_program(spec), store, context, now=NOW)


def test_sweep_keeps_what_uplift_is_measured_with(tmp_path: Path, store: Store,
                                                 context: PluginContext) -> None:
    pq.write_table(customers_table(200), tmp_path / "customers.parquet")
    result = run_program(parse_program(holdout_program(holdout=0.3)), store, context, now=NOW)
    assert result.funnel.held_out > 0
    plain = run_program(parse_program(holdout_program(name="plain", holdout=0.0)), store, context,
                        now=NOW)
    removed = store.sweep_expired(NOW + timedelta(days=30))
    assert removed == plain.funnel.targeted == 200  # a program without a control group: all go
    left = all_candidates(store)
    # the measured program keeps its control group and the treated customers compared with it
    assert len(left) == result.funnel.selected and {c.program for c in left} == {"h"}
    assert sum(c.holdout for c in left) == result.funnel.held_out


def test_a_failed_program_reports_its_recorded_run(tmp_path: Path, store: Store,
                                                   context: PluginContext) -> None:
    pq.write_table(customers_table(5), tmp_path / "customers.parquet")
    broken = parse_program(holdout_program(name="broken", filters=[{"id": "f", "expr": "nope > 1"}]))
    [result] = run_programs([broken], store, context, now=NOW)
    assert result.run.run_id and result.run.run_id == store.runs("default")[0].run_id
    assert result.run.status == "failed"


def test_declared_timestamps_apply_their_offset(tmp_path: Path, store: Store,
                                                context: PluginContext) -> None:
    write_csv(tmp_path / "events.csv", "customer_id,seen_at",
              ["a,2026-11-25 10:00:00+02:00", "b,2026-11-25 10:00:00", "c,yesterday"])
    spec = {"name": "events", "source": {"type": "csv", "path": "events.csv",
                                         "columns": {"seen_at": "timestamp"}, "max_bad_share": 0.5},
            "filters": [{"id": "before_nine_utc", "expr": "seen_at < TIMESTAMP '2026-11-25 09:00:00'"}],
            "action": {"type": "inform", "channels": ["inapp"]}}
    result = run_program(parse_program(spec), store, context, now=NOW)
    assert [c.customer_id for c in all_candidates(store)] == ["a"]  # 10:00+02:00 is 08:00 UTC
    assert result.funnel.quarantine_reasons == {"column seen_at: not a valid timestamp": 1}


def test_every_funnel_row_reads_true_on_its_own() -> None:
    """A stage that removes rows is named "after ...": its count is what is left, never
    what it removed (20,000 rows after quarantining 3 must not read "quarantined 20,000")."""
    from ceap.pipeline.funnel import Funnel

    funnel = Funnel(read=20_003, quarantined=3, filters={"active": 5_000}, eligible=15_000,
                    unscored=1, below_threshold=9_000, duplicate_customer=999, over_top_k=4_000,
                    selected=1_000, held_out=150, global_control=50, targeted=850, written=900,
                    already_present=100)
    rows = {stage: (left, removed) for stage, left, removed in funnel.rows()}
    assert rows["after quarantine (bad rows)"] == (20_000, 3)
    assert rows["after filter: active"] == (15_000, 5_000)
    assert rows["after dropping unscored rows"] == (14_999, 1)
    assert rows["after threshold"] == (5_999, 9_000)
    assert rows["after one per customer (lower scores)"] == (5_000, 999)
    assert rows["after top-k"] == (1_000, 4_000)
    assert rows["after program holdout"] == (900, 100)
    assert rows["after global control group"] == (850, 50)
    assert rows["after dedup (already stored)"] == (900, 100)
    assert rows["targeted (will be acted on)"] == (850, 0)
    for stage, (_left, removed) in rows.items():
        assert removed == 0 or stage.startswith("after "), stage
