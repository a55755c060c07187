"""Arms and variants as a run assigns them: deterministic, at their weights, with the
global control group exempting transactional and security programs, and the variant
overrides applied to the candidates."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from ceap.experiments.assignment import in_global_control, in_holdout, unit_fraction, variant_of
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.spec import parse_program
from ceap.store import Store, open_store

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
N = 6000


@pytest.fixture
def project(tmp_path: Path) -> Path:
    pq.write_table(pa.table({"customer_id": [f"c{i:05d}" for i in range(N)],
                             "value": [float(i % 97) for i in range(N)]}),
                   tmp_path / "customers.parquet")
    return tmp_path


def program(name: str = "promo", category: str = "marketing", **experiment: Any) -> dict[str, Any]:
    return {"name": name, "source": {"type": "parquet", "path": "customers.parquet"},
            "scorer": {"type": "expression", "expr": "value / 100"},
            "action": {"type": "offer", "channels": ["email"], "template": "offer_base",
                       "payload": {"discount_pct": 10, "topic": "deals"}, "category": category,
                       "delay": "1h", "expiry": "2d"},
            "experiment": experiment}


def candidates(store: Store, program: str) -> dict[str, Any]:
    found = store.candidates(CandidateQuery(program=program, limit=100_000, include_expired=True))
    return {c.customer_id: c for c in found}


def run(spec: dict[str, Any], store: Store, project: Path, global_control: float = 0.0,
        now: datetime = NOW) -> Any:
    context = PluginContext(base_dir=project, global_control=global_control)
    return run_program(parse_program(spec), store, context, now=now)


def within_binomial(count: int, n: int, p: float) -> bool:
    """``count`` inside the central 99.9% of Binomial(n, p)."""
    low, high = stats.binom.interval(0.999, n, p)
    return low <= count <= high


VARIANTS = [{"name": "a", "weight": 1},
            {"name": "b", "weight": 2, "template": "offer_b", "payload": {"discount_pct": 20},
             "channels": ["sms", "email"], "delay": "3h"},
            {"name": "c", "weight": 1, "payload": {"topic": None, "extra": {"x": 1}}}]


def test_variants_follow_their_weights_and_the_python_equivalent(project: Path, store: Store) -> None:
    result = run(program(holdout=0.1, variants=VARIANTS), store, project)
    found = candidates(store, "promo")
    assert len(found) == N
    treated = [c for c in found.values() if c.arm == "treatment"]
    for name, share in (("a", 0.25), ("b", 0.5), ("c", 0.25)):
        count = sum(c.variant == name for c in treated)
        assert within_binomial(count, len(treated), share), (name, count, len(treated))
    for c in found.values():  # the SQL in DuckDB and the documented one-liners agree
        assert c.variant == variant_of("default", "promo", c.customer_id, ["a", "b", "c"], [1, 2, 1])
        assert (c.arm == "holdout") == in_holdout("default", "promo", c.customer_id, 0.1)
        assert c.holdout == (c.arm != "treatment")
        assert c.status == ("held_out" if c.holdout else "pending")
    held = [c for c in found.values() if c.arm == "holdout"]
    assert result.funnel.held_out == len(held) and result.funnel.global_control == 0
    assert within_binomial(len(held), N, 0.1)
    # control customers carry the variant they would have had, at the same weights
    assert within_binomial(sum(c.variant == "b" for c in held), len(held), 0.5)


def test_the_variant_draw_is_independent_of_the_holdout_draw(project: Path, store: Store) -> None:
    run(program(holdout=0.5, variants=[{"name": "a"}, {"name": "b"}]), store, project)
    found = list(candidates(store, "promo").values())
    table = [[sum(c.arm == arm and c.variant == v for c in found) for v in ("a", "b")]
             for arm in ("treatment", "holdout")]
    assert stats.chi2_contingency(table).pvalue > 0.001, table


def test_variant_overrides_reach_the_candidates(project: Path, store: Store) -> None:
    run(program(variants=VARIANTS), store, project)
    by_variant = {}
    for c in candidates(store, "promo").values():
        by_variant.setdefault(c.variant, c)
    a, b, c = by_variant["a"], by_variant["b"], by_variant["c"]
    assert (a.template, a.channels, a.payload) == ("offer_base", ["email"],
                                                   {"discount_pct": 10, "topic": "deals"})
    assert (a.not_before, a.expires_at) == (NOW + timedelta(hours=1), NOW + timedelta(hours=49))
    assert (b.template, b.channels, b.payload) == ("offer_b", ["sms", "email"],
                                                   {"discount_pct": 20, "topic": "deals"})
    assert (b.not_before, b.expires_at) == (NOW + timedelta(hours=3), NOW + timedelta(hours=51))
    # a JSON merge patch: null removes a key, mappings merge
    assert c.payload == {"discount_pct": 10, "extra": {"x": 1}} and c.template == "offer_base"


def test_assignment_is_stable_across_runs_and_stores(project: Path, store: Store) -> None:
    spec = program(holdout=0.2, variants=VARIANTS)
    run(spec, store, project, global_control=0.05)
    first = {k: (c.arm, c.variant) for k, c in candidates(store, "promo").items()}
    other = open_store(f"sqlite:///{project / 'other.db'}")
    run(spec, other, project, global_control=0.05, now=NOW + timedelta(days=5))
    assert {k: (c.arm, c.variant) for k, c in candidates(other, "promo").items()} == first


def test_global_control_is_one_group_across_programs_and_exempts_transactional_security(
        project: Path, store: Store) -> None:
    share = 0.1
    results = {name: run(program(name, category, holdout=0.1), store, project, global_control=share)
               for name, category in (("promo", "marketing"), ("later", "marketing"),
                                      ("receipt", "transactional"), ("fraud", "security"))}
    expected = {f"c{i:05d}" for i in range(N) if in_global_control("default", f"c{i:05d}", share)}
    assert within_binomial(len(expected), N, share)
    for name in ("promo", "later"):  # the same customers in every marketing program
        found = candidates(store, name)
        assert {k for k, c in found.items() if c.arm == "global_control"} == expected
        assert all(c.status == "held_out" and c.holdout for k, c in found.items() if k in expected)
        assert results[name].funnel.global_control == len(expected)
        # the program's own holdout is drawn among the rest, as before
        assert {k for k, c in found.items() if c.arm == "holdout"} == {
            k for k in found if k not in expected and in_holdout("default", name, k, 0.1)}
    for name in ("receipt", "fraud"):  # exempt: nobody in the global control group
        found = candidates(store, name)
        assert not any(c.arm == "global_control" for c in found.values())
        assert {k for k, c in found.items() if c.arm == "holdout"} == {
            k for k in found if in_holdout("default", name, k, 0.1)}
        assert results[name].funnel.global_control == 0
    # the group does not depend on the programs: the one-liner needs none
    assert unit_fraction("default:global_control:c00001") == unit_fraction(
        "default:global_control:c00001")


def test_a_marketing_program_may_opt_out_of_the_global_control(project: Path, store: Store) -> None:
    run(program(global_control=False), store, project, global_control=0.2)
    assert not any(c.arm != "treatment" for c in candidates(store, "promo").values())


def test_without_experiment_fields_nothing_changes(project: Path, store: Store) -> None:
    result = run(program(holdout=0.2), store, project)
    found = candidates(store, "promo")
    assert all(c.variant is None and c.features is None for c in found.values())
    assert {k for k, c in found.items() if c.holdout} == {
        k for k in found if in_holdout("default", "promo", k, 0.2)}
    assert {c.arm for c in found.values()} == {"treatment", "holdout"}
    rows = dict((stage, removed) for stage, _, removed in result.funnel.rows())
    assert rows["after program holdout"] == result.funnel.held_out
    assert "after global control group" not in rows


def test_the_funnel_names_both_control_groups(project: Path, store: Store) -> None:
    f = run(program(holdout=0.1), store, project, global_control=0.1).funnel
    rows = {stage: (left, removed) for stage, left, removed in f.rows()}
    assert rows["after global control group"][1] == f.global_control > 0
    assert rows["after program holdout"][1] == f.held_out - f.global_control > 0
    assert f.targeted == f.selected - f.held_out == rows["after global control group"][0]


def test_bandit_shares_replace_the_weights(project: Path, store: Store) -> None:
    from ceap.pipeline.funnel import Funnel
    from ceap.pipeline.selection import RunInfo, select
    from ceap.sqlexpr import sandboxed_connection

    spec = parse_program(program(variants=[{"name": "a"}, {"name": "b"}]))
    scored = pa.table({"customer_id": [f"c{i}" for i in range(4000)],
                       "__ceap_score": [0.5] * 4000})
    info = RunInfo("default", "r1", NOW, "m", weights={"a": 0.9, "b": 0.1})
    table = select(sandboxed_connection(), scored, spec, info, Funnel())
    count = table.column("variant").to_pylist().count("a")
    assert within_binomial(count, 4000, 0.9)
    stale = replace(info, weights={"a": 0.9, "z": 0.1})  # other variants: the spec's weights
    table = select(sandboxed_connection(), scored, spec, stale, Funnel())
    assert within_binomial(table.column("variant").to_pylist().count("a"), 4000, 0.5)
