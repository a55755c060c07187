"""Thompson sampling over a program's variants (Beta-Bernoulli on conversion).

Each variant's conversion probability has a Beta(prior_alpha, prior_beta) prior;
its posterior after ``trials`` final treated candidates (see ``finality``) of which
``successes`` converted is Beta(prior_alpha + successes, prior_beta + trials -
successes). A trial is one treated candidate (one decision of the bandit). The
share of each variant is the posterior probability that it is the best, estimated
by Monte Carlo (``draws`` joint draws from a seeded generator: the same data gives
the same shares), then floored: ``share = min_share + (1 - k * min_share) * p_best``
for ``k`` variants, so every variant keeps at least ``min_share`` of the treated.
Control groups are drawn before the variants and do not depend on the shares.

Every update is stored in ``bandit_arms`` (one row per variant, at the update's
time); selection assigns with the latest shares. Until the first final outcome
there is no update, and the variants' own weights apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ceap.experiments.finality import final_treated_sql
from ceap.experiments.reading import table_exists
from ceap.spec.experiment import Bandit
from ceap.spec.program import ProgramSpec
from ceap.store.base import Store
from ceap.store.schema import from_iso


@dataclass(frozen=True)
class ArmState:
    variant: str
    at: datetime
    share: float
    alpha: float
    beta: float
    trials: int
    successes: int


def thompson_shares(trials: Sequence[int], successes: Sequence[int],
                    bandit: Bandit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(alpha, beta, share)`` per variant (see the module docstring)."""
    t, s = np.asarray(trials, dtype=float), np.asarray(successes, dtype=float)
    alpha, beta = bandit.prior_alpha + s, bandit.prior_beta + t - s
    rng = np.random.default_rng(bandit.seed)
    draws = rng.beta(alpha, beta, size=(bandit.draws, len(alpha)))
    best = np.bincount(draws.argmax(axis=1), minlength=len(alpha)) / bandit.draws
    k = len(alpha)
    return alpha, beta, bandit.min_share + (1 - k * bandit.min_share) * best


def update_bandit(store: Store, tenant: str, spec: ProgramSpec, now: datetime,
                  within: timedelta) -> list[ArmState] | None:
    """Recompute the shares from the final outcomes and store them at ``now``. None (and
    nothing stored) when the program has no bandit, the store records no outcomes yet, or
    no treated candidate's outcome is final yet."""
    bandit = spec.experiment.bandit
    if bandit is None:
        return None
    names = [v.name for v in spec.experiment.variants]
    with store.tx() as tx:
        if not table_exists(tx, "conversions"):
            return None
        sql, params = final_treated_sql(tx, "c.variant, COUNT(*), SUM(converted)", tenant,
                                        spec.name, now, within, tail="GROUP BY c.variant")
        counts = {v: (int(n), int(k or 0)) for v, n, k in tx.execute(sql, params).fetchall()}
        trials = [counts.get(n, (0, 0))[0] for n in names]
        successes = [counts.get(n, (0, 0))[1] for n in names]
        if not sum(trials):  # nothing learned yet: the spec's weights stay
            return None
        alpha, beta, shares = thompson_shares(trials, successes, bandit)
        states = [ArmState(n, now, float(sh), float(a), float(b), t, s) for n, sh, a, b, t, s
                  in zip(names, shares, alpha, beta, trials, successes, strict=True)]
        tx.executemany(
            "INSERT INTO bandit_arms (tenant_id, program, variant, at, share, alpha, beta, trials, "
            "successes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, program, at, variant) DO NOTHING",
            [(tenant, spec.name, st.variant, tx.ts(now), st.share, st.alpha, st.beta, st.trials,
              st.successes) for st in states])
    return states


def bandit_history(store: Store, tenant: str, program: str) -> list[ArmState]:
    """Every stored update of the program's bandit, oldest first."""
    with store.tx() as tx:
        rows = tx.execute("SELECT variant, at, share, alpha, beta, trials, successes FROM bandit_arms "
                          "WHERE tenant_id = ? AND program = ? ORDER BY at, variant",
                          (tenant, program)).fetchall()
    out = []
    for v, at, share, a, b, t, s in rows:
        when = from_iso(at)
        assert when is not None
        out.append(ArmState(v, when, float(share), float(a), float(b), int(t), int(s)))
    return out


def latest_shares(store: Store, tenant: str, program: str) -> dict[str, float] | None:
    """The shares of the program's latest update, or None before the first."""
    with store.tx() as tx:
        rows = tx.execute(
            "SELECT variant, share FROM bandit_arms WHERE tenant_id = ? AND program = ? AND at = "
            "(SELECT MAX(at) FROM bandit_arms WHERE tenant_id = ? AND program = ?)",
            (tenant, program, tenant, program)).fetchall()
    return {v: float(s) for v, s in rows} or None


class SharesCache:
    """The latest shares per program, re-read at most every ``ttl`` (for the stream worker,
    which selects many times a minute)."""

    def __init__(self, ttl: timedelta = timedelta(minutes=1)):
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[datetime, Mapping[str, float] | None]] = {}

    def get(self, store: Store, tenant: str, spec: ProgramSpec,
            now: datetime) -> Mapping[str, float] | None:
        if spec.experiment.bandit is None:
            return None
        key = (tenant, spec.name)
        cached = self._cache.get(key)
        if cached is None or now - cached[0] >= self.ttl or now < cached[0]:
            cached = (now, latest_shares(store, tenant, spec.name))
            self._cache[key] = cached
        return cached[1]
