"""The three flagship proofs of concept, measured on data.

- ``ceap.poc.churn``: churn on the IBM Telco customer table (LightGBM vs rules).
- ``ceap.poc.recs``: recommendations on MovieLens ratings (implicit ALS vs popularity).
- ``ceap.poc.fraud``: account takeover on a documented synthetic login log
  (LightGBM vs the rules of use cases 5 and 6).

Each module's ``prepare`` writes its data under ``data/poc/`` and its model
under ``models/poc/`` (skipped when already there for the seed), ``evaluate``
measures model and baseline on the held-out part, and ``python -m
ceap.poc.<name>`` prints the figures. ``run_all`` does all three and runs their
programs (``programs/churn_telco.yaml``, ``recs_movielens.yaml``,
``fraud_takeover.yaml``) through the normal pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ceap.poc.runner import run_all

__all__ = ["PROGRAMS", "run_all"]

#: the proof-of-concept programs, in the order ``run_all`` runs them
PROGRAMS = ("churn_telco", "recs_movielens", "fraud_takeover")


def __getattr__(name: str) -> Any:
    # lazy, so that ``python -m ceap.poc.churn`` does not import its own module twice
    if name == "run_all":
        from ceap.poc.runner import run_all

        return run_all
    raise AttributeError(f"module 'ceap.poc' has no attribute {name!r}")
