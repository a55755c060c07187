"""Vega-Lite figures of the simulations (rendered with ``ceap.experiments.plots.write_plot``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ceap.experiments.charts import SCHEMA, WIDTH


def regret_chart(rows: Sequence[dict[str, Any]], title: str) -> dict[str, Any]:
    """Lines of cumulative regret by round, one per policy, with a band.

    ``rows``: ``{"round", "policy", "regret", "low", "high"}`` (the band: ``low`` to ``high``)."""
    x = {"field": "round", "type": "quantitative", "title": "round (one batch run each)",
         "axis": {"tickMinStep": 1}}
    color = {"field": "policy", "type": "nominal", "title": None}
    return {"$schema": SCHEMA, "title": title, "width": WIDTH, "height": 260,
            "data": {"values": list(rows)},
            "layer": [
                {"mark": {"type": "line", "point": True},
                 "encoding": {"x": x, "y": {"field": "regret", "type": "quantitative",
                                            "title": "cumulative regret (expected conversions lost)"},
                              "color": color,
                              "tooltip": [{"field": "policy"}, {"field": "round"},
                                          {"field": "regret", "format": ".1f"}]}},
                {"mark": {"type": "area", "opacity": 0.2},
                 "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"},
                              "y2": {"field": "high"}, "color": color}},
            ],
            "config": {"font": "DejaVu Sans"}}


__all__ = ["regret_chart"]
