"""An experiment's design and the program file the simulator writes for it.

The program is an ordinary CEAP program (``programs/<name>.yaml``): its source is
the cohort's Parquet file, its experiment the design's holdout, variants and
bandit, its goal ``purchase`` within ``within`` (value: ``amount``). Each variant
carries its arm's channel and ``lift`` in its payload, so a template can show the
offer and the simulator knows what the customer received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from ceap.durations import format_duration
from ceap.simulate.population import Arm

GOAL_EVENT = "purchase"
VALUE = "amount"
SOURCE = Path("data") / "customers.parquet"
OFFER_URL = "https://shop.example/offer"
COLUMNS = {"visits_30d": "int", "discount_affinity": "float", "complaints_90d": "int",
           "tenure_months": "int"}


@dataclass(frozen=True)
class Design:
    """What the simulated program does; ``arms`` are its variants (one arm: no variants)."""

    name: str = "offer"
    arms: tuple[Arm, ...] = (Arm("a"),)
    holdout: float = 0.2
    within: timedelta = timedelta(days=7)
    #: ``experiment.bandit`` (e.g. ``{"min_share": 0.05}``); None: fixed weights
    bandit: dict[str, Any] | None = None
    #: the program's scorer; default: everyone scores 1
    scorer: dict[str, Any] = field(default_factory=lambda: {"type": "expression", "expr": "1.0"})
    top_k: int | None = None
    template: str | None = None
    global_control: bool = False
    expiry: timedelta = timedelta(days=2)

    def arm(self, variant: str | None) -> Arm:
        """The arm of a candidate's variant (the only arm when there are no variants)."""
        if len(self.arms) == 1:
            return self.arms[0]
        for a in self.arms:
            if a.name == variant:
                return a
        raise KeyError(f"no arm named {variant!r} in design {self.name!r}")

    def program(self) -> dict[str, Any]:
        """The program as the mapping ``programs/<name>.yaml`` holds."""
        first = self.arms[0]
        action: dict[str, Any] = {"type": "offer", "channels": [first.channel],
                                  "payload": {"offer": "discount", "lift": first.lift, "url": OFFER_URL},
                                  "expiry": format_duration(self.expiry)}
        if self.template:
            action["template"] = self.template
        experiment: dict[str, Any] = {"holdout": self.holdout, "global_control": self.global_control}
        if len(self.arms) > 1:
            experiment["variants"] = [{"name": a.name, "weight": a.weight, "channels": [a.channel],
                                       "payload": {"lift": a.lift}} for a in self.arms]
        if self.bandit is not None:
            experiment["bandit"] = dict(self.bandit)
        selection: dict[str, Any] = {"dedup_window": "1h"}
        if self.top_k is not None:
            selection["top_k"] = self.top_k
        return {
            "name": self.name,
            "description": "simulated customers with a known response (ceap.simulate)",
            "source": {"type": "parquet", "path": str(SOURCE), "customer_id": "customer_id",
                       "columns": COLUMNS},
            "scorer": self.scorer,
            "selection": selection,
            "action": action,
            "experiment": experiment,
            "goal": {"event": GOAL_EVENT, "within": format_duration(self.within), "value": VALUE},
        }

    def write(self, project_dir: Path) -> Path:
        """Write ``programs/<name>.yaml`` under ``project_dir``; returns its path."""
        path = Path(project_dir) / "programs" / f"{self.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.program(), sort_keys=False))
        return path


__all__ = ["GOAL_EVENT", "SOURCE", "VALUE", "Design"]
