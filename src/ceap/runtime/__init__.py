"""Runtimes: batch runs (and, later, the stream worker and the scheduler)."""

from ceap.runtime.batch import RunResult, run_program, run_programs

__all__ = ["RunResult", "run_program", "run_programs"]
