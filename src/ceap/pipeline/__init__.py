"""The stages every program runs, batch or stream, over Arrow batches."""

from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import Plan

__all__ = ["Funnel", "Plan"]
