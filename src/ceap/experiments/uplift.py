"""The uplift report of one program: arms, treated vs control, breakdowns, guardrails.

Control groups: the program's holdout, and the tenant-wide global control group.
The main comparison is treatment vs the holdout (both get the other programs'
messages, so the difference is this program's effect); treatment vs the global
control (no marketing at all) follows when that group has customers. Breakdowns
(``by``) compare each group's treated customers with the control customers of the
same group: the same score decile, the same (would-be) channel, the same variant.
For variants with fixed weights every control customer is a fair comparison for
every variant, so the whole control group is used (more power); under a bandit the
shares move over time, and only the control customers who would have had the
variant (assigned at the same times and shares) are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ceap.experiments.outcomes_table import ProgramOutcomes, read_outcomes
from ceap.experiments.stats import METHODS, ArmStats, Comparison, arm_stats, compare
from ceap.spec.experiment import Guardrails
from ceap.store.base import Store

By = Literal["variant", "score_decile", "channel"]
BY_CHOICES: tuple[str, ...] = ("variant", "score_decile", "channel")


@dataclass
class Guardrail:
    name: str
    treated_rate: float | None
    limit: float
    exceeded: bool
    treated: int
    customers: int


@dataclass
class UpliftReport:
    program: str
    tenant: str
    since: datetime | None
    until: datetime
    candidates: int
    arms: dict[str, ArmStats]
    comparisons: list[Comparison]
    by: str | None = None
    groups: list[Comparison] = field(default_factory=list)
    control_for_groups: str | None = None
    guardrails: list[Guardrail] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=lambda: dict(METHODS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def _group(customers: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    return customers.filter(mask)


def _compare_tables(label: str, treated: pa.Table, control: pa.Table) -> Comparison:
    return compare(label, _column(treated, "converted").astype(bool), _column(treated, "value"),
                   _column(control, "converted").astype(bool), _column(control, "value"),
                   _guards(treated), _guards(control))


def _guards(table: pa.Table) -> tuple[int, int, int, int]:
    """Customers who unsubscribed, complained, opened, clicked (``arm_stats``'s order)."""
    unsubscribed, complained, opened, clicked = (
        int(pc.sum(table.column(name)).as_py() or 0)
        for name in ("unsubscribed", "complained", "opened", "clicked"))
    return unsubscribed, complained, opened, clicked


def _arm(customers: pa.Table, arm: str) -> pa.Table:
    return customers.filter(pc.equal(customers.column("arm"), arm))


def uplift_report(store: Store, tenant: str, program: str, now: datetime, *,
                  since: datetime | None = None, by: str | None = None,
                  guardrails: Guardrails | None = None, bandit: bool = False,
                  has_goal: bool | None = None) -> UpliftReport:
    """Build the report from the store (see the module docstring for the comparisons).
    ``has_goal`` False (the program file declares no ``goal``) adds a warning."""
    if by is not None and by not in BY_CHOICES:
        raise ValueError(f"by: expected one of {', '.join(BY_CHOICES)}, got {by!r}")
    data = read_outcomes(store, tenant, program, since)
    report = build(data, tenant, program, now, since=since, by=by,
                   guardrails=guardrails or Guardrails.model_validate({}), bandit=bandit)
    if has_goal is False:
        report.warnings.insert(0, "the program has no goal: no conversion is attributed to its "
                                  "candidates, so every arm converts 0%: add `goal:` to the program "
                                  "(docs/outcomes.md#goals)")
    return report


def build(data: ProgramOutcomes, tenant: str, program: str, now: datetime, *,
          since: datetime | None, by: str | None, guardrails: Guardrails,
          bandit: bool) -> UpliftReport:
    customers = data.customers
    arms = {}
    for name in ("treatment", "holdout", "global_control"):
        rows = _arm(customers, name)
        if rows.num_rows or name == "treatment":
            arms[name] = arm_stats(_column(rows, "converted").astype(bool), _column(rows, "value"),
                                   *_guards(rows))
    report = UpliftReport(program, tenant, since, now, data.candidates, arms, [])
    treated = _arm(customers, "treatment")
    controls: list[str] = [name for name in ("holdout", "global_control") if name in arms]
    for name in controls:
        report.comparisons.append(_compare_tables(f"treatment vs {name}", treated,
                                                  _arm(customers, name)))
    _warn(report, data, controls)
    if by and controls:
        report.control_for_groups = controls[0]
        report.by = by
        report.groups = _groups(customers, by, controls[0], bandit)
    elif by:
        report.by = by
    report.guardrails = _guardrails(arms["treatment"], guardrails)
    for g in report.guardrails:
        if g.exceeded:
            report.warnings.append(f"guardrail: {g.name} rate {g.treated_rate:.2%} of treated "
                                   f"customers is above {g.limit:.2%}")
    return report


def _groups(customers: pa.Table, by: str, control_arm: str, bandit: bool) -> list[Comparison]:
    treated, control = _arm(customers, "treatment"), _arm(customers, control_arm)
    column = by
    values = sorted({v for v in treated.column(column).to_pylist() if v is not None},
                    key=lambda v: (isinstance(v, str), v))
    out = []
    for value in values:
        label = f"decile {value}" if by == "score_decile" else str(value)
        t = _group(treated, pc.equal(treated.column(column), value))
        pooled = by == "variant" and not bandit
        c = control if pooled else _group(control, pc.equal(control.column(column), value))
        out.append(_compare_tables(label, t, c))
    return out


def _guardrails(treated: ArmStats, limits: Guardrails) -> list[Guardrail]:
    out = []
    n = treated.customers
    for name, count, limit in (("unsubscribe", treated.unsubscribed, limits.max_unsubscribe_rate),
                               ("complaint", treated.complained, limits.max_complaint_rate)):
        rate = count / n if n else None
        out.append(Guardrail(name, rate, limit, rate is not None and rate > limit, count, n))
    return out


def _warn(report: UpliftReport, data: ProgramOutcomes, controls: list[str]) -> None:
    if not data.has_conversions:
        report.warnings.append("no conversions table in the store: outcomes are not recorded yet "
                               "(the outcomes part attributes goal events to candidates)")
    if not data.candidates:
        report.warnings.append("no candidates for this program in the period")
    elif not controls:
        n = data.customers.num_rows
        report.warnings.append(f"no control customers: none of the {n:,} customer(s) drew into a "
                               "control group; set experiment.holdout (or the project's "
                               "experiments.global_control) to measure uplift, and if it is set, "
                               "wait for more customers (a 10% holdout draws none of a few)")
    if data.shadow:
        report.warnings.append(f"{data.shadow:,} treated candidates are from shadow mode: nothing "
                               "was sent to them, so their uplift is not the program's")
    for c in report.comparisons:
        if c.small_sample and c.treated.customers and c.control.customers:
            report.warnings.append(f"{c.label}: sample too small to conclude")
