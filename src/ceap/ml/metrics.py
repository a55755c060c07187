"""Held-out metrics of a binary scorer, in plain numpy (no scikit-learn needed)."""

from __future__ import annotations

import math

import numpy as np


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class only."""
    y = np.asarray(y, dtype=bool)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    from scipy.stats import rankdata  # SciPy only when metrics are computed

    ranks = rankdata(p)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def precision_at(y: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Share of positives among the top ``share`` of rows by score (at least one row)."""
    y = np.asarray(y, dtype=bool)
    if y.size == 0:
        return math.nan
    k = max(1, math.ceil(y.size * share))
    top = np.argsort(-np.asarray(p, dtype=np.float64), kind="stable")[:k]
    return float(y[top].mean())


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, log loss, precision in the top decile, its lift, the base rate and the row count."""
    y = np.asarray(y, dtype=bool)
    base = float(y.mean()) if y.size else math.nan
    top = precision_at(y, p)
    return {
        "roc_auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "precision_at_top_decile": top,
        "lift_at_top_decile": top / base if base else math.nan,
        "base_rate": base,
        "rows": float(y.size),
    }
