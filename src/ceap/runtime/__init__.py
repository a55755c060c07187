"""Runtimes: batch runs, escalation chains and the scheduler (``ceap.runtime.scheduler``)."""

from ceap.runtime.batch import RunResult, run_program, run_programs

__all__ = ["RunResult", "run_program", "run_programs"]
