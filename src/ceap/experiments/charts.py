"""Vega-Lite specs of the experiment figures: plain JSON, the same for the CLI's
``--plot`` (rendered offline by ``ceap.experiments.plots``) and for a dashboard.

Each builder takes report data and returns a Vega-Lite v5 spec with its data inline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ceap.experiments.stats import ArmStats, Comparison

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH = 420


def _base(title: str, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {"$schema": SCHEMA, "title": title, "width": WIDTH, "data": {"values": values}}


def conversion_by_arm(program: str, arms: dict[str, ArmStats]) -> dict[str, Any]:
    """Bars: each arm's conversion rate, with its interval as a rule."""
    values = [{"arm": name, "rate": a.rate, "low": a.rate_ci[0] if a.rate_ci else None,
               "high": a.rate_ci[1] if a.rate_ci else None, "customers": a.customers,
               "converted": a.converted} for name, a in arms.items() if a.rate is not None]
    y = {"field": "arm", "type": "nominal", "title": None, "sort": list(arms)}
    tooltip = [{"field": f, "type": "quantitative"} for f in ("customers", "converted")]
    return {**_base(f"{program}: conversion rate by arm (95% interval)", values), "layer": [
        {"mark": {"type": "bar", "color": "#4c78a8"},
         "encoding": {"y": y, "x": {"field": "rate", "type": "quantitative",
                                    "title": "conversion rate", "axis": {"format": ".1%"}},
                      "tooltip": [{"field": "arm"}, {"field": "rate", "format": ".2%"}, *tooltip]}},
        {"mark": {"type": "rule", "color": "black"},
         "encoding": {"y": y, "x": {"field": "low", "type": "quantitative"}, "x2": {"field": "high"}}},
    ]}


def uplift_by_group(program: str, groups: Sequence[Comparison], by: str) -> dict[str, Any]:
    """Points with interval rules: each group's absolute uplift, and the zero line."""
    values = [{"group": g.label, "uplift": g.absolute_uplift,
               "low": g.absolute_ci[0] if g.absolute_ci else None,
               "high": g.absolute_ci[1] if g.absolute_ci else None,
               "treated": g.treated.customers, "control": g.control.customers,
               "small_sample": g.small_sample}
              for g in groups if g.absolute_uplift is not None]
    y = {"field": "group", "type": "nominal", "title": by.replace("_", " "),
         "sort": [g.label for g in groups]}
    x = {"field": "uplift", "type": "quantitative", "title": "absolute uplift (treated - control)",
         "axis": {"format": "+.1%"}}
    return {**_base(f"{program}: uplift by {by.replace('_', ' ')} (95% interval)", values), "layer": [
        {"mark": {"type": "rule", "color": "#888"}, "encoding": {"y": y, "x": {
            "field": "low", "type": "quantitative"}, "x2": {"field": "high"}}},
        {"mark": {"type": "point", "filled": True, "size": 70},
         "encoding": {"y": y, "x": x, "color": {
             "field": "small_sample", "type": "nominal", "title": "sample too small",
             "scale": {"domain": [False, True], "range": ["#4c78a8", "#e45756"]}},
             "tooltip": [{"field": "group"}, {"field": "uplift", "format": "+.2%"},
                         {"field": "treated"}, {"field": "control"}]}},
        {"data": {"values": [{"zero": 0}]}, "mark": {"type": "rule", "strokeDash": [4, 4]},
         "encoding": {"x": {"field": "zero", "type": "quantitative"}}},
    ]}


def uplift_figure(program: str, arms: dict[str, ArmStats], groups: Sequence[Comparison],
                  by: str | None, comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """The report's figure: rates by arm, then uplift by group (or per comparison)."""
    second = (uplift_by_group(program, groups, by) if by and groups
              else uplift_by_group(program, comparisons, "comparison"))
    first = conversion_by_arm(program, arms)
    for part in (first, second):
        part.pop("$schema")
    return {"$schema": SCHEMA, "vconcat": [first, second],
            "config": {"font": "DejaVu Sans"}}


def bandit_shares(program: str, history: Sequence[tuple[datetime, str, float]]) -> dict[str, Any]:
    """Lines: each variant's share over time (``(at, variant, share)`` rows)."""
    values = [{"at": at.isoformat(), "variant": v, "share": s} for at, v, s in history]
    return {**_base(f"{program}: bandit shares over time", values),
            "mark": {"type": "line", "point": True, "interpolate": "step-after"},
            "encoding": {
                "x": {"field": "at", "type": "temporal", "title": "updated at (UTC)"},
                "y": {"field": "share", "type": "quantitative", "title": "share of treated",
                      "axis": {"format": ".0%"}, "scale": {"domain": [0, 1]}},
                "color": {"field": "variant", "type": "nominal"},
                "tooltip": [{"field": "at", "type": "temporal"}, {"field": "variant"},
                            {"field": "share", "format": ".1%"}]},
            "config": {"font": "DejaVu Sans"}}
