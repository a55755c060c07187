"""Simulated customers with a known response, driving the real platform.

``population`` holds the truth (who converts with and without a message),
``experiment`` runs programs over sampled cohorts through every real path (runs,
dispatch, engagement and purchases back through the API and the worker,
attribution, the uplift report), ``targeting`` fits propensity and uplift
scorers, ``measures`` summarises many experiments. See docs/experiments.md,
"Proof on a known truth", and the benches ``bench/uplift_coverage.py``,
``bench/bandit_regret.py`` and ``bench/uplift_targeting.py``.
"""
