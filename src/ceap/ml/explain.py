"""Reasons: per row, the features whose contributions moved the score most."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where contributions are ranked
    import numpy as np


def top_contributions(contrib: np.ndarray, features: list[str], top: int) -> list[dict[str, float]]:
    """Per row, up to ``top`` features by |contribution|, largest first (zeros left out).

    ``contrib`` has one column per feature (any bias column already dropped).
    """
    import numpy as np

    contrib = np.asarray(contrib, dtype=np.float64)
    if contrib.ndim != 2 or contrib.shape[1] != len(features):
        raise ValueError(f"contributions of shape {contrib.shape} for {len(features)} features")
    k = min(max(top, 0), len(features))
    if k == 0:
        return [{} for _ in range(contrib.shape[0])]
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    out: list[dict[str, float]] = []
    for row, idx in zip(contrib, order, strict=True):
        out.append({features[j]: float(row[j]) for j in idx if row[j] != 0 and np.isfinite(row[j])})
    return out
