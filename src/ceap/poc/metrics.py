"""Model-quality metrics in NumPy: ROC AUC, precision in the top fraction, precision and
recall at a threshold, and precision@k / recall@k of ranked recommendations.

Ties are handled as a random tie-break would on average, so a rules baseline
whose scores take a few values is measured fairly against a model's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def _arrays(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    if truth.shape != values.shape or truth.ndim != 1:
        raise ValueError(f"labels {truth.shape} and scores {values.shape} must be 1-D and equal")
    return truth, values


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic with average ranks for ties."""
    truth, values = _arrays(labels, scores)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC AUC needs both positive and negative labels")
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0  # 1-based mean rank of each tied group
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = average[inverse]
    return float((ranks[truth].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def precision_at_fraction(labels: npt.ArrayLike, scores: npt.ArrayLike,
                          fraction: float = 0.1) -> float:
    """Share of positives among the ``fraction`` of rows scored highest (0.1: the top decile).

    Rows tied with the last one taken count in proportion, as under a random tie-break.
    """
    truth, values = _arrays(labels, scores)
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    take = max(1, math.ceil(fraction * truth.size))
    cut = np.sort(values)[::-1][take - 1]
    above = values > cut
    tied = values == cut
    room = take - int(above.sum())
    hits = truth[above].sum() + room * truth[tied].mean()
    return float(hits / take)


def precision_recall(labels: npt.ArrayLike, flagged: npt.ArrayLike) -> dict[str, float | int]:
    """Precision and recall of a yes/no decision (``flagged``) against the labels."""
    truth, decided = _arrays(labels, np.asarray(flagged, dtype=np.float64))
    chosen = decided > 0
    tp = int((truth & chosen).sum())
    n_flagged, n_pos = int(chosen.sum()), int(truth.sum())
    return {
        "precision": tp / n_flagged if n_flagged else 0.0,
        "recall": tp / n_pos if n_pos else 0.0,
        "flagged": n_flagged,
        "true_positives": tp,
        "positives": n_pos,
    }


def average_precision(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the precision-recall curve (average precision, step-wise, ties grouped)."""
    truth, values = _arrays(labels, scores)
    positives = int(truth.sum())
    if positives == 0:
        raise ValueError("average precision needs positive labels")
    order = np.argsort(-values, kind="mergesort")
    sorted_values, sorted_truth = values[order], truth[order]
    # the last index of each group of tied scores
    ends = np.flatnonzero(np.r_[sorted_values[1:] != sorted_values[:-1], True])
    tp = np.cumsum(sorted_truth)[ends]
    taken = ends + 1
    recall_steps = np.diff(np.r_[0, tp]) / positives
    return float(np.sum(recall_steps * tp / taken))


def ranking_at_k(recommended: Sequence[npt.ArrayLike], relevant: Sequence[npt.ArrayLike],
                 k: int = 10) -> dict[str, float | int]:
    """Mean precision@k and recall@k over users, from each user's ranked item list and the
    set of items that user went on to like. Users with no relevant item are skipped."""
    if len(recommended) != len(relevant):
        raise ValueError("one recommendation list and one relevant set per user")
    precision: list[float] = []
    recall: list[float] = []
    for ranked, liked in zip(recommended, relevant, strict=True):
        liked = np.asarray(liked)
        if liked.size == 0:
            continue
        hits = int(np.isin(np.asarray(ranked)[:k], liked).sum())
        precision.append(hits / k)
        recall.append(hits / liked.size)
    return {
        f"precision@{k}": float(np.mean(precision)) if precision else 0.0,
        f"recall@{k}": float(np.mean(recall)) if recall else 0.0,
        "users": len(precision),
    }
