"""experiment.learn: a River scorer learns the final outcomes of treated candidates,
with the features they were scored with, and the program scores with the new version."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ceap.ml.artefacts import ModelRegistry, parse_ref
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.scorers.river import positive_proba
from ceap.spec import parse_program
from ceap.store import Store
from tests.experiment_helpers import add_conversions, candidate_ids
from tests.ml_helpers import FEATURES, churn_table, train_kind
from tests.test_bandit import with_goal

pytest.importorskip("river")
NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def learning_program(**experiment: object) -> dict[str, object]:
    return {"name": "retain", "source": {"type": "parquet", "path": "customers.parquet"},
            "scorer": {"type": "river", "model": "online", "allow_pickle": True},
            "selection": {"top_k": 150},
            "action": {"type": "offer", "channels": ["email"], "expiry": "1h"},
            "experiment": {"holdout": 0.2, "learn": True, **experiment},
            "goal": {"event": "purchase", "within": "1d"}}


def test_final_outcomes_teach_the_model_once(tmp_path: Path, store: Store) -> None:
    train_kind(tmp_path / "models", "river", name="online", table=churn_table(400))
    source = churn_table(300, seed=11)
    pq.write_table(source, tmp_path / "customers.parquet")
    rows = {r["customer_id"]: r for r in source.to_pylist()}
    spec = with_goal(parse_program(learning_program()), timedelta(hours=12))
    context = PluginContext(base_dir=tmp_path)

    first = run_program(spec, store, context, now=NOW)
    assert first.funnel.model == "online@1"
    made = list(candidate_ids(store, "retain").values())
    assert len(made) == 150
    for c in made:  # the features the candidate was scored with, kept for later
        assert c.features == pytest.approx({f: float(rows[c.customer_id][f]) for f in FEATURES})
    treated = sorted((c for c in made if c.arm == "treatment"), key=lambda c: c.id)
    converted = {c.id for c in treated[::3]}
    add_conversions(store, [("default", "retain", i, "x", 1.0) for i in sorted(converted)],
                    NOW + timedelta(hours=1))

    second = run_program(spec, store, context, now=NOW + timedelta(days=1))
    assert second.funnel.model == "online@2"  # learned before selecting: the new version scores
    registry = ModelRegistry(tmp_path / "models")
    meta = registry.resolve(parse_ref("online@2")).meta
    assert meta.parent == "online@1" and meta.fingerprint.rows == len(treated)
    # an independent River model, taught the same rows in the same order, agrees
    with open(registry.resolve(parse_ref("online@1")).path, "rb") as fh:
        reference = pickle.load(fh)
    for c in treated:
        reference.learn_one({f: float(rows[c.customer_id][f]) for f in FEATURES}, c.id in converted)
    with open(registry.resolve(parse_ref("online@2")).path, "rb") as fh:
        learned = pickle.load(fh)
    probe = [{f: float(r[f]) for f in FEATURES} for r in source.to_pylist()[:20]]
    assert np.allclose([positive_proba(learned.predict_proba_one(x)) for x in probe],
                       [positive_proba(reference.predict_proba_one(x)) for x in probe])
    with store.tx() as tx:
        learned_rows = tx.execute("SELECT candidate_id, converted, model FROM learned_outcomes "
                                  "ORDER BY candidate_id").fetchall()
    assert [r[0] for r in learned_rows] == [c.id for c in treated]  # never the control groups
    assert {r[0] for r in learned_rows if r[1]} == converted
    assert {r[2] for r in learned_rows} == {"online@2"}

    third = run_program(spec, store, context, now=NOW + timedelta(days=2))
    assert third.funnel.model == "online@3"
    day_two = [c for c in candidate_ids(store, "retain").values()
               if c.created_at == NOW + timedelta(days=1) and c.arm == "treatment"]
    assert registry.resolve(parse_ref("online@3")).meta.fingerprint.rows == len(day_two)
    with store.tx() as tx:
        count = tx.execute("SELECT COUNT(*) FROM learned_outcomes").fetchone()[0]
    assert count == len(treated) + len(day_two)  # the first day's outcomes were not learned twice


def test_open_windows_and_plain_programs_learn_nothing(tmp_path: Path, store: Store) -> None:
    train_kind(tmp_path / "models", "river", name="online", table=churn_table(400))
    pq.write_table(churn_table(100, seed=2), tmp_path / "customers.parquet")
    context = PluginContext(base_dir=tmp_path)
    spec = with_goal(parse_program(learning_program()), timedelta(days=3))
    run_program(spec, store, context, now=NOW)
    again = run_program(spec, store, context, now=NOW + timedelta(days=1))  # window still open
    assert again.funnel.model == "online@1"
    plain = parse_program({**learning_program(), "name": "plain", "experiment": {"holdout": 0.2}})
    run_program(plain, store, context, now=NOW)
    assert all(c.features is None for c in candidate_ids(store, "plain").values())


def test_missing_and_nan_features_are_kept_as_null(tmp_path: Path, store: Store) -> None:
    import pyarrow as pa

    train_kind(tmp_path / "models", "river", name="online", table=churn_table(400))
    source = churn_table(4, seed=2)
    spend = pa.array([float("nan"), None, 10.0, 20.0], pa.float64())
    source = source.set_column(source.schema.get_field_index("spend"), "spend", spend)
    pq.write_table(source, tmp_path / "customers.parquet")
    spec = parse_program({**learning_program(), "selection": {}})
    run_program(spec, store, PluginContext(base_dir=tmp_path), now=NOW)
    found = {c.customer_id: c.features for c in candidate_ids(store, "retain").values()}
    assert found["c0"]["spend"] is None and found["c1"]["spend"] is None  # JSON has no NaN
    assert found["c2"]["spend"] == 10.0 and set(found["c2"]) == set(FEATURES)
