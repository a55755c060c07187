"""Render the Vega-Lite specs of ``ceap.experiments.charts`` to files, offline
(vl-convert bundles Vega; no browser, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ceap.errors import CeapError
from ceap.ml.deps import require

FORMATS = (".png", ".svg", ".json")


def write_plot(spec: dict[str, Any], path: str | Path) -> Path:
    """Write ``spec`` as PNG or SVG (by the file's suffix), or as the Vega-Lite JSON itself."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise CeapError(f"--plot {target}: use a .png, .svg or .json file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        target.write_text(json.dumps(spec, indent=2) + "\n")
        return target
    vlc = require("vl_convert", "--plot")
    if suffix == ".png":
        target.write_bytes(vlc.vegalite_to_png(spec, scale=2))
    else:
        target.write_text(vlc.vegalite_to_svg(spec))
    return target
