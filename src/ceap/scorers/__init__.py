"""Scorers: a number per row (and the model that made it)."""

from ceap.scorers.base import Scorer, ScorerConfig

__all__ = ["Scorer", "ScorerConfig"]
