"""Program specs and the project config, loaded from YAML into typed models."""

from ceap.spec.loading import load_program, load_programs, parse_program
from ceap.spec.program import Action, Experiment, ProgramSpec, Selection
from ceap.spec.project import ProjectConfig, load_project

__all__ = [
    "Action",
    "Experiment",
    "ProgramSpec",
    "ProjectConfig",
    "Selection",
    "load_program",
    "load_programs",
    "load_project",
    "parse_program",
]
