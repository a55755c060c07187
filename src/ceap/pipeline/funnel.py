"""A program run's funnel: how many rows each stage kept and removed, and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Funnel:
    """Counts for one run. ``filters`` maps filter id to rows it removed, in order."""

    read: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    filters: dict[str, int] = field(default_factory=dict)
    eligible: int = 0
    unscored: int = 0
    below_threshold: int = 0
    duplicate_customer: int = 0
    over_top_k: int = 0
    selected: int = 0
    held_out: int = 0
    #: of ``held_out``, those in the tenant-wide global control group (the rest: the holdout)
    global_control: int = 0
    targeted: int = 0
    written: int = 0
    already_present: int = 0
    model: str | None = None
    #: an incremental source's high-water mark after this run (see ceap.runtime.cursor)
    cursor: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "quarantine_reasons"}
        data["filters"] = dict(self.filters)
        data["quarantine_reasons"] = dict(self.quarantine_reasons.most_common(20))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Funnel:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["quarantine_reasons"] = Counter(known.get("quarantine_reasons") or {})
        known["filters"] = dict(known.get("filters") or {})
        return cls(**known)

    def rows(self) -> list[tuple[str, int, int]]:
        """``(stage, rows left after it, rows it removed)`` in pipeline order, for display.
        Each stage reads true on its own: "after X" counts the rows left once X removed its
        share; the others (read, eligible, selected, targeted, written) count rows that are so."""
        out = [("read", self.read, 0)]
        left = self.read - self.quarantined
        out.append(("after quarantine (bad rows)", left, self.quarantined))
        for fid, removed in self.filters.items():
            left -= removed
            out.append((f"after filter: {fid}", left, removed))
        out.append(("eligible (passed every filter)", self.eligible, 0))
        for name, removed in (("after dropping unscored rows", self.unscored),
                              ("after threshold", self.below_threshold),
                              ("after one per customer (lower scores)", self.duplicate_customer),
                              ("after top-k", self.over_top_k)):
            if removed:
                left = (out[-1][1]) - removed
                out.append((name, left, removed))
        out.append(("selected", self.selected, 0))
        holdout = self.held_out - self.global_control
        out.append(("after program holdout", self.selected - holdout, holdout))
        if self.global_control:
            out.append(("after global control group", self.selected - self.held_out,
                        self.global_control))
        out.append(("targeted (will be acted on)", self.targeted, 0))
        if self.already_present:
            out.append(("after dedup (already stored)", self.selected - self.already_present,
                        self.already_present))
        out.append(("new candidates written", self.written, 0))
        return out
