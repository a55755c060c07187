"""Experiments: assignment (holdout, global control, variants), the uplift report, the
bandit and online learning from outcomes. See docs/experiments.md."""
