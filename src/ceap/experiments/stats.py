"""Two-arm comparisons for the uplift report, with statsmodels and scipy.

Per comparison of a treated group with its control group (customers as units):

- conversion rate of each arm with a Wilson score interval
  (``statsmodels.stats.proportion.proportion_confint(method="wilson")``);
- absolute uplift (difference of rates) with Newcombe's hybrid score interval
  (``confint_proportions_2indep(method="newcomb", compare="diff")``): good coverage
  for small and extreme rates, and defined when an arm has 0% or 100%;
- its p-value from the score test (``test_proportions_2indep(method="score")``,
  Miettinen-Nurminen); undefined when both arms have 0% or both 100%;
- relative uplift (ratio of rates - 1) with the score interval for the ratio
  (``confint_proportions_2indep(method="score", compare="ratio")``); undefined
  when the control has no conversion;
- value per customer (0 for customers who did not convert): difference of means,
  Welch's t-test and its interval (``scipy.stats.ttest_ind(equal_var=False)``);
- the minimum detectable absolute uplift at 80% power and the same alpha, given
  both arms' sizes and the control's rate (``NormalIndPower`` on Cohen's h);
- small sample: either arm has fewer than ``MIN_EVENTS`` conversions or
  ``MIN_EVENTS`` non-conversions, where the large-sample methods above are not
  to be trusted; the report then says the sample is too small to conclude.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ceap.ml.deps import require

ALPHA = 0.05
POWER = 0.8
MIN_EVENTS = 10

METHODS = {
    "unit": "customer (each counted once, in the arm of their first candidate in the period)",
    "rate_ci": "Wilson score interval",
    "absolute_uplift_ci": "Newcombe hybrid score interval (statsmodels confint_proportions_2indep, "
                          "method='newcomb')",
    "p_value": "score test, Miettinen-Nurminen (statsmodels test_proportions_2indep, method='score')",
    "relative_uplift_ci": "score interval for the ratio of rates, minus 1 (statsmodels "
                          "confint_proportions_2indep, method='score', compare='ratio')",
    "value_per_customer": "Welch's t-test and interval on per-customer value (scipy ttest_ind, "
                          "equal_var=False)",
    "mde": f"minimum detectable absolute uplift at {POWER:.0%} power, two-sided alpha {ALPHA} "
           "(statsmodels NormalIndPower on Cohen's h)",
    "small_sample": f"fewer than {MIN_EVENTS} conversions or {MIN_EVENTS} non-conversions in an arm",
}


@dataclass
class ArmStats:
    """One arm (or one group of an arm): customers, conversions, value, guardrails."""

    customers: int
    converted: int
    rate: float | None
    rate_ci: tuple[float, float] | None
    value: float
    value_per_customer: float | None
    unsubscribed: int = 0
    complained: int = 0
    opened: int = 0   # customers an open of one of their deliveries was recorded for
    clicked: int = 0  # customers a click was recorded for


@dataclass
class Comparison:
    """A treated group against its control group."""

    label: str
    treated: ArmStats
    control: ArmStats
    absolute_uplift: float | None = None
    absolute_ci: tuple[float, float] | None = None
    p_value: float | None = None
    relative_uplift: float | None = None
    relative_ci: tuple[float, float] | None = None
    value_difference: float | None = None
    value_ci: tuple[float, float] | None = None
    value_p_value: float | None = None
    mde: float | None = None
    significant: bool = False
    small_sample: bool = True
    notes: list[str] = field(default_factory=list)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _interval(low: float, high: float) -> tuple[float, float] | None:
    lo, hi = _finite(low), _finite(high)
    return (lo, hi) if lo is not None and hi is not None else None


def arm_stats(converted: np.ndarray, value: np.ndarray, unsubscribed: int = 0,
              complained: int = 0, opened: int = 0, clicked: int = 0) -> ArmStats:
    proportion = require("statsmodels.stats.proportion", "the uplift report")
    n, k = int(converted.size), int(np.count_nonzero(converted))
    total = float(value.sum()) if n else 0.0
    if not n:
        return ArmStats(0, 0, None, None, 0.0, None, unsubscribed, complained, opened, clicked)
    low, high = proportion.proportion_confint(k, n, alpha=ALPHA, method="wilson")
    return ArmStats(n, k, k / n, _interval(low, high), total, total / n, unsubscribed, complained,
                    opened, clicked)


def compare(label: str, t_converted: np.ndarray, t_value: np.ndarray, c_converted: np.ndarray,
            c_value: np.ndarray, t_guard: tuple[int, ...] = (0, 0),
            c_guard: tuple[int, ...] = (0, 0)) -> Comparison:
    """Compare a treated group with its control (boolean conversion and value per customer)."""
    treated = arm_stats(t_converted, t_value, *t_guard)
    control = arm_stats(c_converted, c_value, *c_guard)
    out = Comparison(label, treated, control)
    nt, nc, kt, kc = treated.customers, control.customers, treated.converted, control.converted
    if not nt or not nc:
        out.notes.append("no treated customers" if not nt else "no control customers")
        return out
    proportion = require("statsmodels.stats.proportion", "the uplift report")
    power = require("statsmodels.stats.power", "the uplift report")
    scipy_stats = require("scipy.stats", "the uplift report")
    assert treated.rate is not None and control.rate is not None
    out.absolute_uplift = treated.rate - control.rate
    with warnings.catch_warnings():  # 0/0 rates: reported as undefined below, not as warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        out.absolute_ci = _interval(*proportion.confint_proportions_2indep(
            kt, nt, kc, nc, method="newcomb", compare="diff", alpha=ALPHA))
        if 0 < kt + kc < nt + nc:
            out.p_value = _finite(proportion.test_proportions_2indep(
                kt, nt, kc, nc, method="score", compare="diff").pvalue)
        else:
            out.notes.append("no p-value: both arms converted " + ("never" if kt + kc == 0
                                                                    else "always"))
        if kc:
            out.relative_uplift = treated.rate / control.rate - 1
            ratio = proportion.confint_proportions_2indep(
                kt, nt, kc, nc, method="score", compare="ratio", alpha=ALPHA)
            out.relative_ci = _interval(ratio[0] - 1, ratio[1] - 1)
        else:
            out.notes.append("no relative uplift: the control has no conversion")
        if nt >= 2 and nc >= 2 and (np.ptp(t_value) > 0 or np.ptp(c_value) > 0):
            welch = scipy_stats.ttest_ind(t_value, c_value, equal_var=False)
            assert treated.value_per_customer is not None and control.value_per_customer is not None
            out.value_difference = treated.value_per_customer - control.value_per_customer
            out.value_p_value = _finite(welch.pvalue)
            ci = welch.confidence_interval(1 - ALPHA)
            out.value_ci = _interval(ci.low, ci.high)
        h = power.NormalIndPower().solve_power(effect_size=None, nobs1=nt, alpha=ALPHA, power=POWER,
                                               ratio=nc / nt, alternative="two-sided")
    out.mde = _detectable(control.rate, float(h))
    out.significant = out.p_value is not None and out.p_value < ALPHA
    counts = (kt, nt - kt, kc, nc - kc)
    out.small_sample = min(counts) < MIN_EVENTS
    if out.small_sample:
        out.notes.append(f"sample too small to conclude: each arm needs at least {MIN_EVENTS} "
                         f"conversions and {MIN_EVENTS} non-conversions (treated {kt} of {nt}, "
                         f"control {kc} of {nc})")
    elif not out.significant and out.mde is not None:
        out.notes.append(f"no significant difference; with these sizes an uplift smaller than "
                         f"{out.mde:+.2%} would usually go unseen ({POWER:.0%} power)")
    return out


def _detectable(control_rate: float, h: float) -> float | None:
    """The absolute uplift over ``control_rate`` whose Cohen's h is ``h``."""
    if not math.isfinite(h):
        return None
    angle = math.asin(math.sqrt(control_rate)) + h / 2
    return (1.0 if angle >= math.pi / 2 else math.sin(angle) ** 2) - control_rate
