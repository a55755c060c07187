"""The simulator's models and summaries, without the platform: the propensity and
T-learner scorers (fitted with statsmodels, run as expression scorers), bias and
coverage, regret."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ceap.scorers.expression import ExpressionScorer
from ceap.simulate.measures import bias, coverage, pseudo_regret
from ceap.simulate.population import Arm, World
from ceap.simulate.targeting import Logistic, fit_logistic, propensity_scorer, uplift_scorer

WORLD = World(size=60_000, seed=4)
ARM = Arm("a", "inapp")


def simulated_history(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A randomised experiment drawn straight from the world (half treated)."""
    rng = np.random.default_rng(seed)
    rows = WORLD.sample(n, seed)
    frame = WORLD.table(rows, [f"h{i}" for i in range(n)]).to_pandas()
    treated = rng.random(n) < 0.5
    p = np.where(treated, WORLD.p1(ARM, rows), WORLD.p0[rows])
    frame["arm"] = np.where(treated, "treatment", "holdout")
    frame["converted"] = (rng.random(n) < p).astype(int)
    return frame, rows


def score(config: dict[str, object], frame: pd.DataFrame) -> np.ndarray:
    scorer = ExpressionScorer(ExpressionScorer.config_model.model_validate(config))
    return scorer.score(pa.Table.from_pandas(frame, preserve_index=False))


def test_uplift_scorer_targets_the_persuadables_and_propensity_the_sure_things() -> None:
    past, _ = simulated_history(30_000, seed=1)
    fresh, rows = simulated_history(20_000, seed=2)
    effect = WORLD.effect(ARM, rows)
    by_uplift = score(uplift_scorer(past), fresh)
    by_propensity = score(propensity_scorer(past), fresh)
    top = len(fresh) // 5
    gained = {name: effect[np.argsort(-s)[:top]].mean()
              for name, s in (("uplift", by_uplift), ("propensity", by_propensity))}
    assert gained["uplift"] > 2 * effect.mean() > 2 * gained["propensity"]
    best = np.argsort(-by_propensity)[:top]
    assert WORLD.p0[rows][best].mean() > 2 * WORLD.p0[rows][np.argsort(-by_uplift)[:top]].mean()
    segments = np.asarray(WORLD.segment_names(rows))
    assert (segments[np.argsort(-by_uplift)[:top]] == "persuadable").mean() > 0.6
    assert (segments[best] == "sure_thing").mean() > 0.6


def test_the_fitted_formula_runs_the_same_in_sql() -> None:
    past, _ = simulated_history(5_000, seed=3)
    model = fit_logistic(past, past["converted"])
    sql = score({"type": "expression", "expr": model.sql()}, past)
    assert sql == pytest.approx(model.predict(past), rel=1e-9)
    assert Logistic((0.0,) * 6).predict(past[:3]) == pytest.approx([0.5] * 3)


def test_bias_and_coverage_summaries() -> None:
    c = coverage([0.0, 0.1, 0.3, -0.2], [0.2, 0.3, 0.4, 0.1], 0.15)
    assert (c.experiments, c.covered, c.above, c.below) == (4, 2, 1, 1)
    assert c.rate == 0.5 and c.interval[0] < 0.5 < c.interval[1]
    assert c.mean_width == pytest.approx((0.2 + 0.2 + 0.1 + 0.3) / 4)
    b = bias([0.1, 0.3], [0.15, 0.15])
    assert b.mean == pytest.approx(0.05) and b.rmse == pytest.approx(np.sqrt((0.05**2 + 0.15**2) / 2))
    assert b.standard_error == pytest.approx(np.std([-0.05, 0.15], ddof=1) / np.sqrt(2))


def test_regret_counts_what_the_worse_arms_lose() -> None:
    rates = {"a": 0.10, "b": 0.15}
    assert pseudo_regret({"a": 100, "b": 300}, rates) == pytest.approx(5.0)
    assert pseudo_regret({"b": 1000}, rates) == 0
