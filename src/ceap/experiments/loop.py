"""Closing the loop before a program selects: attribute the outcomes, update the
bandit's shares, teach the online model.

``ceap run`` does this for each batch program with a bandit or ``experiment.learn``
before it reads the source; ``ceap experiments update`` does it on demand (for
real-time programs: schedule it, the worker re-reads the shares every minute).
The attribution (``ceap.outcomes.attribution.attribute``) is used when installed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ceap.experiments.bandit import ArmState, latest_shares, update_bandit
from ceap.experiments.feedback import Learned, learn_from_outcomes
from ceap.plugin import PluginContext
from ceap.registry import Registry
from ceap.spec.program import ProgramSpec
from ceap.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    program: str
    attributed: Any = None
    bandit: list[ArmState] | None = None
    learned: Learned | None = None
    #: the shares selection should use (None: the spec's weights)
    weights: Mapping[str, float] | None = None
    note: str | None = None


def goal_window(spec: ProgramSpec) -> timedelta | None:
    """The attribution window of the program's goal (``goal.within``), if it has a goal."""
    goal = getattr(spec, "goal", None)
    within = getattr(goal, "within", None) if goal is not None else None
    return within if isinstance(within, timedelta) else None


def attribute(store: Store, specs: list[ProgramSpec], now: datetime) -> Any:
    """The outcomes part's attribution, when it is installed (None otherwise)."""
    try:
        module = importlib.import_module("ceap.outcomes.attribution")
    except ImportError:
        return None
    return module.attribute(store, specs, now)


def needs_loop(spec: ProgramSpec) -> bool:
    return spec.experiment.bandit is not None or spec.experiment.learn


def close_loop(spec: ProgramSpec, store: Store, context: PluginContext, now: datetime,
               registry: Registry | None = None, attributed: bool = False) -> LoopResult:
    """Attribute (unless ``attributed``), update the bandit, learn; see the module docstring."""
    result = LoopResult(spec.name)
    if not needs_loop(spec):
        return result
    if not attributed:
        result.attributed = attribute(store, [spec], now)
    within = goal_window(spec)
    if within is None:
        result.note = "the program has no goal: no outcomes to learn from"
    else:
        if spec.experiment.bandit is not None:
            result.bandit = update_bandit(store, context.tenant, spec, now, within)
        if spec.experiment.learn:
            result.learned = learn_from_outcomes(store, spec, context, now, within, registry)
    if spec.experiment.bandit is not None:
        result.weights = latest_shares(store, context.tenant, spec.name)
    return result
