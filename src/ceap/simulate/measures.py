"""Summaries of many simulated experiments: bias, interval coverage, regret."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.proportion import proportion_confint


@dataclass(frozen=True)
class Coverage:
    """How often the 95% intervals held the truth, with the Wilson interval of that rate."""

    experiments: int
    covered: int
    rate: float
    interval: tuple[float, float]
    #: intervals entirely above / below the truth
    above: int
    below: int
    mean_width: float


@dataclass(frozen=True)
class Bias:
    """Mean of (estimate - truth), its standard error, and the root mean squared error."""

    mean: float
    standard_error: float
    rmse: float
    mean_estimate: float
    truth: float


def coverage(lows: Sequence[float], highs: Sequence[float], truths: Sequence[float] | float) -> Coverage:
    low, high = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    truth = np.broadcast_to(np.asarray(truths, dtype=float), low.shape)
    held = (low <= truth) & (truth <= high)
    n, k = int(low.size), int(held.sum())
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return Coverage(n, k, k / n, (float(lo), float(hi)), int((low > truth).sum()),
                    int((high < truth).sum()), float((high - low).mean()))


def bias(estimates: Sequence[float], truths: Sequence[float] | float) -> Bias:
    est = np.asarray(estimates, dtype=float)
    truth = np.broadcast_to(np.asarray(truths, dtype=float), est.shape)
    error = est - truth
    return Bias(float(error.mean()), float(error.std(ddof=1) / np.sqrt(error.size)),
                float(np.sqrt((error ** 2).mean())), float(est.mean()), float(truth.mean()))


def pseudo_regret(assigned: Mapping[str, int], rates: Mapping[str, float]) -> float:
    """Expected conversions lost against always giving the best arm:
    ``sum over arms of assigned * (best rate - arm's rate)``."""
    best = max(rates.values())
    return float(sum(n * (best - rates[arm]) for arm, n in assigned.items()))


__all__ = ["Bias", "Coverage", "bias", "coverage", "pseudo_regret"]
