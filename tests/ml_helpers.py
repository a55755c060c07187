"""Builders shared by the model tests: a learnable table and trained artefacts."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from ceap.ml.artefacts import Artefact, ModelRegistry
from ceap.ml.train import TrainOptions, TrainParams, train

FEATURES = ["recency", "orders", "spend"]


def churn_table(n: int = 3000, seed: int = 3) -> pa.Table:
    """Churn driven by recency (up) and orders (down); ``ts`` is shuffled hourly timestamps."""
    rng = np.random.default_rng(seed)
    recency = rng.exponential(30, n)
    orders = rng.poisson(3, n).astype(np.int64)
    spend = rng.gamma(2.0, 40.0, n)
    logit = 0.08 * recency - 0.9 * orders + 0.002 * spend - 0.5
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    start = datetime(2025, 1, 1)
    ts = [start + timedelta(hours=int(h)) for h in rng.permutation(n)]
    return pa.table({
        "customer_id": [f"c{i}" for i in range(n)],
        "recency": recency, "orders": orders, "spend": spend,
        "churned": churned, "ts": pa.array(ts, pa.timestamp("us")),
        "country": rng.choice(["US", "FR"], n),
    })


def train_kind(root: Path, kind: str, name: str = "churn", table: pa.Table | None = None,
               trees: int = 30, time_column: str | None = "ts") -> Artefact:
    options = TrainOptions(name=name, features=list(FEATURES), label="churned",
                           time_column=time_column, kind=kind, params=TrainParams(trees=trees))
    return train(table if table is not None else churn_table(), options, ModelRegistry(root))
