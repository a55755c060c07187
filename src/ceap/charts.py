"""Vega-Lite specs of the operations figures: a run's funnel and deliveries over time.

Like ``ceap.experiments.charts`` (the uplift and bandit figures), each builder returns a
plain Vega-Lite v5 spec with its data inline: the dashboard embeds it (vendored
vega-embed) and the CLI's ``--plot`` renders it offline (``ceap.experiments.plots``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ceap.experiments.charts import SCHEMA, WIDTH
from ceap.model import RunRecord
from ceap.pipeline.funnel import Funnel

FONT = {"font": "DejaVu Sans"}
#: one colour per delivery status, the same on every figure: done in greens, waiting in
#: blues, stopped by a policy or a person in greys, in doubt in orange, lost in reds
STATUS_COLOURS = {
    "delivered": "#2f855a", "sent": "#68d391", "queued": "#4c78a8", "sending": "#9ecae9",
    "shadow": "#b794f4", "suppressed": "#a0aec0", "cancelled": "#718096", "expired": "#cbd5e0",
    "ambiguous": "#ed8936", "failed": "#fc8181", "bounced": "#e53e3e", "complained": "#c53030",
    "dead": "#742a2a",
}


def funnel_stages(funnel: Funnel) -> list[dict[str, Any]]:
    """The rows of a funnel figure: ``Funnel.rows()`` (what ``ceap run`` prints), then the
    most common quarantine reasons, each ``{"stage", "rows", "removed", "kind"}``."""
    out: list[dict[str, Any]] = [
        {"stage": stage, "rows": rows, "removed": removed, "kind": "removed rows" if removed else "rows"}
        for stage, rows, removed in funnel.rows()]
    out += [{"stage": f"quarantine: {reason}", "rows": None, "removed": count, "kind": "quarantined"}
            for reason, count in funnel.quarantine_reasons.most_common(3)]
    return out


def funnel_chart(program: str, funnel: Funnel, run_id: str | None = None) -> dict[str, Any]:
    """Bars: rows left after each stage (the rows a stage removed in the tooltip); the
    quarantine reasons as bars of the rows they set aside."""
    values = funnel_stages(funnel)
    for v in values:
        v["bar"] = v["rows"] if v["rows"] is not None else v["removed"]
    title = f"{program}: funnel" + (f" of run {run_id}" if run_id else "")
    y = {"field": "stage", "type": "nominal", "title": None, "sort": [v["stage"] for v in values],
         "axis": {"labelLimit": 260}}
    x = {"field": "bar", "type": "quantitative", "title": "rows"}
    return {"$schema": SCHEMA, "title": title, "width": WIDTH, "data": {"values": values},
            "layer": [
                {"mark": {"type": "bar"},
                 "encoding": {"y": y, "x": x, "color": {
                     "field": "kind", "type": "nominal", "title": None,
                     "scale": {"domain": ["rows", "removed rows", "quarantined"],
                               "range": ["#4c78a8", "#9ecae9", "#e45756"]}},
                     "tooltip": [{"field": "stage"}, {"field": "rows", "format": ","},
                                 {"field": "removed", "format": ","}]}},
                {"mark": {"type": "text", "align": "left", "dx": 3},
                 "encoding": {"y": y, "x": x, "text": {"field": "bar", "format": ","}}}],
            "config": FONT}


def deliveries_over_time(rows: Sequence[tuple[str, str, str, int]]) -> dict[str, Any]:
    """Stacked bars per day, one panel per channel, coloured by status: ``(day, channel,
    status, deliveries)`` rows."""
    values = [{"day": d, "channel": ch, "status": s, "deliveries": n} for d, ch, s, n in rows]
    present = {s for _, _, s, _ in rows}
    known = [s for s in STATUS_COLOURS if s in present]  # the legend lists what is there
    unknown = present - set(STATUS_COLOURS)
    return {"$schema": SCHEMA, "title": "deliveries by day, channel and status (UTC)",
            "data": {"values": values},
            "facet": {"field": "channel", "type": "nominal", "title": None},
            "columns": 2,
            "spec": {"width": 260, "height": 140, "mark": {"type": "bar"}, "encoding": {
                "x": {"field": "day", "type": "ordinal", "title": "day"},
                "y": {"field": "deliveries", "type": "quantitative", "aggregate": "sum",
                      "title": "deliveries"},
                "color": {"field": "status", "type": "nominal", "scale": {
                    "domain": [*known, *sorted(unknown)],
                    "range": [*(STATUS_COLOURS[k] for k in known), *["#d69e2e"] * len(unknown)]}},
                "tooltip": [{"field": "day"}, {"field": "channel"}, {"field": "status"},
                            {"field": "deliveries", "aggregate": "sum", "format": ","}]}},
            "resolve": {"scale": {"y": "independent"}},
            "config": FONT}


def events_per_minute(rows: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """A line of events per second, by minute of event time: ``(minute, events)`` rows
    (``YYYY-MM-DDTHH:MM``, UTC)."""
    values = [{"minute": f"{m}:00Z", "per_second": n / 60, "events": n} for m, n in rows]
    return {"$schema": SCHEMA, "title": "events per second, by minute of event time (UTC)",
            "width": WIDTH, "data": {"values": values},
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "minute", "type": "temporal", "title": "minute (UTC)"},
                "y": {"field": "per_second", "type": "quantitative", "title": "events/s"},
                "tooltip": [{"field": "minute", "type": "temporal",
                             "timeUnit": "utcyearmonthdatehoursminutes"},
                            {"field": "events", "format": ","},
                            {"field": "per_second", "format": ".2f"}]},
            "config": FONT}


def plot_funnel(run: RunRecord, path: str | Path) -> Path:
    """``ceap runs --plot``: the run's funnel figure as PNG, SVG or the spec's JSON."""
    from ceap.experiments.plots import write_plot

    return write_plot(funnel_chart(run.program, Funnel.from_dict(run.funnel), run.run_id), path)
