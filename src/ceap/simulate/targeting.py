"""Two ways to pick whom to contact, learned from a past randomised experiment.

- **propensity**: who is likely to convert. A logistic regression of conversion on
  the features, over every customer of the past experiment (the usual "propensity
  to buy" model). It ranks the sure things first.
- **uplift**: whom the message changes. A two-model (T-learner) estimate: one
  logistic regression on the treated customers, one on the control customers;
  the score is the difference of their predicted probabilities.

Both are fitted with statsmodels and become ordinary ``expression`` scorers (the
fitted formula as DuckDB SQL), so a program uses them like any other scorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import statsmodels.api as sm

from ceap.store.base import Store

#: the model's terms: name, SQL over the source's columns, and the same over a DataFrame
TERMS: tuple[tuple[str, str], ...] = (
    ("visits_30d", "visits_30d"),
    ("discount_affinity", "discount_affinity"),
    ("discount_affinity_sq", "discount_affinity * discount_affinity"),
    ("complained", "CAST(complaints_90d > 0 AS DOUBLE)"),
    ("tenure_months", "tenure_months"),
)


def design_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The terms of ``TERMS`` (and a constant) for each row of ``frame``."""
    columns = [np.ones(len(frame)), frame["visits_30d"].to_numpy(float),
               frame["discount_affinity"].to_numpy(float), frame["discount_affinity"].to_numpy(float) ** 2,
               (frame["complaints_90d"].to_numpy(float) > 0).astype(float),
               frame["tenure_months"].to_numpy(float)]
    return np.column_stack(columns)


@dataclass(frozen=True)
class Logistic:
    """A fitted logistic regression over ``TERMS``."""

    params: tuple[float, ...]

    def sql(self) -> str:
        """Its predicted probability as a SQL expression."""
        z = f"{self.params[0]!r}" + "".join(
            f" + ({w!r}) * ({expr})" for w, (_, expr) in zip(self.params[1:], TERMS, strict=True))
        return f"1.0 / (1.0 + exp(-({z})))"

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(design_matrix(frame) @ np.asarray(self.params)))))


def fit_logistic(frame: pd.DataFrame, converted: Sequence[bool] | np.ndarray) -> Logistic:
    model = sm.Logit(np.asarray(converted, dtype=float), design_matrix(frame))
    return Logistic(tuple(float(p) for p in model.fit(disp=0, maxiter=200).params))


def propensity_scorer(history: pd.DataFrame) -> dict[str, Any]:
    """An expression scorer of P(convert | x), fitted on every customer of ``history``."""
    model = fit_logistic(history, history["converted"])
    return {"type": "expression", "name": "propensity_logit", "expr": model.sql()}


def uplift_scorer(history: pd.DataFrame) -> dict[str, Any]:
    """An expression scorer of P(convert | x, treated) - P(convert | x, control)."""
    treated = history[history["arm"] == "treatment"]
    control = history[history["arm"] != "treatment"]
    t = fit_logistic(treated, treated["converted"])
    c = fit_logistic(control, control["converted"])
    return {"type": "expression", "name": "uplift_t_learner", "expr": f"({t.sql()}) - ({c.sql()})"}


def history(store: Store, tenant: str, program: str, cohort: pa.Table) -> pd.DataFrame:
    """A past experiment's customers: their features (from ``cohort``), arm, and whether
    a conversion was attributed to them (read from the store)."""
    with store.tx() as tx:
        rows = tx.execute(
            "SELECT c.customer_id, c.arm, CASE WHEN EXISTS (SELECT 1 FROM conversions v WHERE "
            "v.tenant_id = c.tenant_id AND v.program = c.program AND v.candidate_id = c.id) "
            "THEN 1 ELSE 0 END FROM candidates c WHERE c.tenant_id = ? AND c.program = ?",
            (tenant, program)).fetchall()
    outcomes = pd.DataFrame(rows, columns=["customer_id", "arm", "converted"])
    features = cohort.drop_columns([c for c in ("email",) if c in cohort.column_names]).to_pandas()
    return features.merge(outcomes, on="customer_id", how="inner")


__all__ = ["TERMS", "Logistic", "design_matrix", "fit_logistic", "history", "propensity_scorer",
           "uplift_scorer"]
