"""The demo's churn model: LightGBM trained on the labelled history, with its measured AUC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from ceap.demo.data import history_features
from ceap.poc.common import lightgbm_params

TREES = 100
TEST_SHARE = 0.25


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0  # 1-based mean rank of each tied group
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = average[inverse]
    return float((ranks[truth].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def train_churn_model(history: Path, out: Path, seed: int = 7) -> dict[str, Any]:
    """Train the churn model on ``history`` and save it to ``out`` in LightGBM's text format.

    Training is deterministic for a seed (one thread, fixed seeds). Returns the
    model's quality on a held-out quarter of the history.
    """
    table = pq.read_table(history)
    x, names = history_features(table)
    y = np.asarray(table.column("churned").to_numpy(zero_copy_only=False), dtype=bool)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    test[rng.permutation(len(y))[: int(len(y) * TEST_SHARE)]] = True
    params = lightgbm_params(seed)
    train_set = lgb.Dataset(x[~test], label=y[~test].astype(np.float64), feature_name=names,
                            free_raw_data=True)
    booster = lgb.train(params, train_set, num_boost_round=TREES)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out))
    predicted = booster.predict(x[test], num_threads=1)
    return {
        "model": str(out),
        "features": names,
        "trees": booster.num_trees(),
        "train_rows": int((~test).sum()),
        "test_rows": int(test.sum()),
        "churn_rate": round(float(y.mean()), 4),
        "auc": round(roc_auc(y[test], predicted), 4) if 0 < y[test].sum() < test.sum() else None,
    }
