"""Simulated customers whose response to a message is known exactly.

A :class:`World` is a fixed superpopulation of customers (drawn once from a
seed). Each has observable features and a latent segment:

| segment | share | visits_30d | discount_affinity | what a message does |
|---|---|---|---|---|
| ``sure_thing`` | 20% | many (Poisson 14) | low | little: they buy anyway |
| ``persuadable`` | 25% | few (Poisson 3) | high | a lot: low baseline, large uplift |
| ``lost_cause`` | 40% | few (Poisson 2) | low | little: they do not buy either way |
| ``sleeping_dog`` | 15% | some (Poisson 9) | low | harm: most have complained lately |

The truth is a function of the observable features only (so a model can learn
it), and the segments make the customers most likely to buy anyway differ from
the ones a message moves:

- baseline propensity ``p0(x) = sigmoid(-4 + 0.22 * visits_30d)``;
- treated and contacted on ``channel`` by ``variant``:
  ``p1 = p0 + (1 - p0) * 0.35 * discount_affinity**2 * lift(variant) * reach(channel)
  - 0.6 * p0 * [complaints_90d > 0]``, clipped to [0, 1];
- a customer is contacted when the platform delivered the message: in-app always,
  e-mail when the profile has an address (95%).

An experiment samples its customers from the world with replacement, under fresh
ids, so its arms are independent draws from the world and the true uplift of an
arm is the world's mean (:meth:`World.true_uplift`), exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SEGMENTS = ("sure_thing", "persuadable", "lost_cause", "sleeping_dog")
#: (share, Poisson mean of visits_30d, Beta(a, b) of discount_affinity, P(complaints_90d > 0))
SEGMENT_PARAMS: dict[str, tuple[float, float, tuple[float, float], float]] = {
    "sure_thing": (0.20, 14.0, (2.0, 6.0), 0.02),
    "persuadable": (0.25, 3.0, (6.0, 2.0), 0.02),
    "lost_cause": (0.40, 2.0, (2.0, 5.0), 0.02),
    "sleeping_dog": (0.15, 9.0, (1.5, 5.0), 0.80),
}
#: how well each channel carries the message (the effect's multiplier)
CHANNEL_REACH: dict[str, float] = {"email": 1.0, "inapp": 0.7, "sms": 1.3}
#: share of customers with an e-mail address on file
EMAIL_ON_FILE = 0.95
BASE_INTERCEPT, BASE_VISITS = -4.0, 0.22
RESPONSIVENESS, HARM = 0.35, 0.6
#: the feature columns a program's source carries
FEATURES = ("visits_30d", "discount_affinity", "complaints_90d", "tenure_months")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def baseline(visits: np.ndarray) -> np.ndarray:
    """``p0``: the chance of converting within the window without this message."""
    return sigmoid(BASE_INTERCEPT + BASE_VISITS * np.asarray(visits, dtype=float))


def treated(p0: np.ndarray, affinity: np.ndarray, complaints: np.ndarray, lift: float,
            channel: str) -> np.ndarray:
    """``p1``: the chance of converting when the message reached the customer."""
    if channel not in CHANNEL_REACH:
        raise ValueError(f"channel {channel!r}: the simulator knows {', '.join(CHANNEL_REACH)}")
    gain = (1 - p0) * RESPONSIVENESS * np.asarray(affinity) ** 2 * lift * CHANNEL_REACH[channel]
    harm = HARM * p0 * (np.asarray(complaints) > 0)
    return np.asarray(np.clip(p0 + gain - harm, 0.0, 1.0))


@dataclass(frozen=True)
class Arm:
    """What a treated customer of a variant gets: its channel and the offer's strength."""

    name: str
    channel: str = "inapp"
    lift: float = 1.0
    weight: float = 1.0


class World:
    """A fixed superpopulation (``size`` customers from ``seed``); see the module doc."""

    def __init__(self, size: int = 200_000, seed: int = 0):
        rng = np.random.default_rng(seed)
        shares = np.array([SEGMENT_PARAMS[s][0] for s in SEGMENTS])
        segment = rng.choice(len(SEGMENTS), size=size, p=shares / shares.sum())
        visits = np.empty(size, dtype=np.int64)
        affinity = np.empty(size)
        complaints = np.empty(size, dtype=np.int64)
        for i, name in enumerate(SEGMENTS):
            _, mean, (a, b), complaint = SEGMENT_PARAMS[name]
            mask = segment == i
            n = int(mask.sum())
            visits[mask] = rng.poisson(mean, n)
            affinity[mask] = rng.beta(a, b, n)
            complaints[mask] = rng.binomial(1, complaint, n) * rng.integers(1, 4, n)
        self.size = size
        self.segment = segment
        self.visits = visits
        self.affinity = affinity
        self.complaints = complaints
        self.tenure = rng.integers(1, 120, size)
        self.email = rng.random(size) < EMAIL_ON_FILE
        self.p0 = baseline(visits)

    def p1(self, arm: Arm, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The treated probability of ``rows`` under ``arm`` if the message reaches them."""
        return treated(self.p0[rows], self.affinity[rows], self.complaints[rows], arm.lift, arm.channel)

    def reachable(self, channel: str, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Whether a message on ``channel`` can reach ``rows`` (in-app: always)."""
        if channel == "email":
            return np.asarray(self.email[rows])
        return np.ones(len(self.p0[rows]), dtype=bool)

    def effect(self, arm: Arm, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Each customer's true effect of being assigned ``arm`` (intention to treat: zero
        for the ones the channel cannot reach)."""
        return (self.p1(arm, rows) - self.p0[rows]) * self.reachable(arm.channel, rows)

    def true_uplift(self, arms: Sequence[Arm], shares: Mapping[str, float] | None = None,
                    rows: np.ndarray | slice = slice(None)) -> float:
        """The expected conversion rate of the treated minus the control's, for customers
        drawn from ``rows`` of the world and assigned the arms by their weights (or
        ``shares``)."""
        weights = np.array([(shares or {}).get(a.name, a.weight) for a in arms], dtype=float)
        weights = weights / weights.sum()
        return float(sum(w * self.effect(a, rows).mean() for w, a in zip(weights, arms, strict=True)))

    def arm_rates(self, arms: Sequence[Arm]) -> dict[str, float]:
        """Each arm's expected conversion rate over the world (for the bandit's regret)."""
        return {a.name: float(self.p0.mean() + self.effect(a).mean()) for a in arms}

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` world rows drawn with replacement."""
        return np.random.default_rng(seed).integers(0, self.size, n)

    def table(self, rows: np.ndarray, ids: Sequence[str]) -> pa.Table:
        """A program's source for ``rows``: the customer ids and the observable features."""
        return pa.table({
            "customer_id": pa.array(list(ids), pa.string()),
            "visits_30d": pa.array(self.visits[rows], pa.int64()),
            "discount_affinity": pa.array(np.round(self.affinity[rows], 6), pa.float64()),
            "complaints_90d": pa.array(self.complaints[rows], pa.int64()),
            "tenure_months": pa.array(self.tenure[rows], pa.int64()),
        })

    def segment_names(self, rows: np.ndarray) -> list[str]:
        return [SEGMENTS[i] for i in self.segment[rows]]


__all__ = ["CHANNEL_REACH", "FEATURES", "SEGMENTS", "Arm", "World", "baseline", "sigmoid", "treated"]
