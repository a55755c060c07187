"""``ceap validate`` without Typer: the work of the command, and a quick start for it.

Importing Typer (and Click, and its parameter checks) is about a fifth of the CPU time of
validating a program. The console script (``ceap.cli:main``, and ``python -m ceap``) asks
:func:`plain_validate` first: when its arguments are plainly ``ceap [global options]
validate [--sources] FILE...``, :func:`run_plain` validates, printing exactly what the
Typer command prints; any other command, any
other option or form (``--help``, ``--opt=value``, an unknown option, no file) goes to
the Typer app, which then prints its own help or error. The Typer command
(:mod:`ceap.cli.batch`) runs the same :func:`validate_files`.

Nothing here imports Typer, Rich or the command modules (``tests/test_cli_imports.py``).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ceap.cli import listing
from ceap.errors import CeapError, SpecError

if TYPE_CHECKING:
    from ceap.spec import ProjectConfig

#: the global options of ``ceap`` (``ceap.cli.common.main``), each taking one value: option -> parameter
GLOBAL_OPTIONS = {option: parameter for option, (parameter, _, _) in listing.GLOBAL_OPTIONS.items()}


def echo(text: str, *, ok: str = "", error: bool = False) -> None:
    """A plain line (on standard error with ``error``), after ``ok`` in green when given;
    no markup, no wrapping, colour only on a terminal (as ``typer.secho`` does)."""
    stream = sys.stderr if error else sys.stdout
    if ok:
        text = (f"\x1b[32m{ok} \x1b[0m" if stream.isatty() else f"{ok} ") + text
    stream.write(text + "\n")
    stream.flush()


#: what this process runs at exit, registered once
_at_exit: list[Any] = []


@contextmanager
def short_command() -> Iterator[None]:
    """Run a short command (``ceap validate``) with less garbage collection: rarely while it
    runs (it builds many long-lived objects: models, plugin classes), and not at all when the
    process ends (``gc.freeze`` at exit: objects are still freed by reference counting, only
    cycles are left to the operating system). About 0.06 s of CPU, a fifth of validating a
    program. pydantic's plugins are not looked up (see below). Not for commands holding an
    open resource when the process ends."""
    if gc.freeze not in _at_exit:
        _at_exit.append(gc.freeze)
        atexit.register(gc.freeze)  # atexit runs before the interpreter's own clean-up
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
    # pydantic's plugins observe validations (Logfire's, for one); finding them reads every
    # installed package's entry points when the first model is built. A short command reports
    # nothing to them (Typer builds its own validators so too); a value the user set is kept
    ours = "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    if ours:
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if ours:
            os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)


def program_paths(items: list[str], project: ProjectConfig) -> list[Path]:
    """Program files named by paths, folders (their YAML files) or program names."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        elif p.suffix in (".yaml", ".yml") or p.exists():
            paths.append(p)
        else:
            folder = project.programs_dir()
            yml = folder / f"{item}.yml"
            path = yml if yml.exists() and not (folder / f"{item}.yaml").exists() else folder / f"{item}.yaml"
            paths.append(path if path.exists() else _named(folder, item) or path)
    return paths


def _named(folder: Path, name: str) -> Path | None:
    from ceap.spec.loading import program_file_named  # only when no file bears the name

    return program_file_named(folder, name)


def print_spec_errors(errors: list[SpecError]) -> None:
    """Each error's `file: field: message` lines, on standard error."""
    for exc in errors:
        for line in exc.lines():
            echo(line, error=True)


def validate_files(
    files: list[Path], project: ProjectConfig, tenant: str | None, sources: bool
) -> list[SpecError]:
    """Validate each program file (printing ``ok FILE`` for a good one); the errors."""
    from ceap.spec import load_program

    errors: list[SpecError] = []
    for path in files:
        try:
            spec = load_program(path)
            if spec.action.template or spec.experiment.variants or spec.journey:  # Jinja2 only when needed
                from ceap.delivery.templates import validate_program_templates
                from ceap.experiments.validation import variant_issues

                template_issues = validate_program_templates(spec, project.base_dir, project.delivery)
                template_issues += variant_issues(spec, project)
                if template_issues:
                    raise SpecError(str(path), template_issues)
            if isinstance(getattr(spec.scorer, "model", None), str):  # a model scorer
                from ceap.ml.checks import check_program_model

                model_issues = check_program_model(spec, project.context(tenant))
                if model_issues:
                    raise SpecError(str(path), model_issues)
            if getattr(spec.source, "type", None) == "events":  # its rows' columns are known
                from ceap.realtime.columns import column_issues

                if issues := column_issues(spec):
                    raise SpecError(str(path), issues)
            elif sources:
                from ceap.pipeline.plan import Plan

                plan = Plan(spec, project.context(tenant))
                try:
                    plan.check()
                finally:
                    plan.close()
            echo(str(path), ok="ok")
        except SpecError as exc:
            errors.append(exc)
        except CeapError as exc:
            errors.append(SpecError(str(path), [("", str(exc))]))
    return errors


def plain_validate(args: list[str]) -> dict[str, Any] | None:
    """The options and files of ``[global options] validate [--sources] FILE...`` when the
    arguments are plainly that (every option spelled in full, its value the next argument,
    given once, and at least one file); None for anything else (the Typer app decides)."""
    options: dict[str, Any] = {}
    i = 0
    while i < len(args) and args[i] in GLOBAL_OPTIONS:
        name = GLOBAL_OPTIONS[args[i]]
        if name in options or i + 1 >= len(args) or args[i + 1].startswith("-"):
            return None
        options[name] = args[i + 1]
        i += 2
    if i >= len(args) or args[i] != "validate":
        return None
    paths = []
    sources = False
    for arg in args[i + 1 :]:
        if arg == "--sources" and not sources:
            sources = True
        elif arg.startswith("-"):
            return None
        else:
            paths.append(arg)
    if not paths:
        return None
    return {**options, "paths": paths, "sources": sources}


def run_plain(
    paths: list[str],
    sources: bool,
    project: str | None = None,
    store: str | None = None,
    tenant: str | None = None,
    log_format: str | None = None,
    log_level: str | None = None,
) -> int:
    """What ``ceap [global options] validate`` does, without Typer; the exit code."""
    del store  # validate opens no store
    from ceap.observability.logs import setup_logging
    from ceap.observability.tracing import setup_tracing

    try:
        setup_logging(log_format, log_level)
        setup_tracing("ceap")
    except ValueError as exc:
        echo(f"error: {exc}", error=True)
        return 2
    with short_command():
        from ceap.spec import load_project

        try:
            config = load_project(Path(project) if project is not None else None)
        except SpecError as exc:
            print_spec_errors([exc])
            return 2
        files = program_paths(paths, config)
        if not files:
            echo("no program files found", error=True)
            return 2
        errors = validate_files(files, config, tenant, sources)
        if errors:
            print_spec_errors(errors)
            return 2
    return 0
