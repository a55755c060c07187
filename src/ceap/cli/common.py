"""What every command group shares: the ``ceap`` app, its global options, the consoles
and the helpers that load the project, the store and program files.

Command modules import from here (never from ``ceap.cli``), and the app's group
(:mod:`ceap.cli.lazy`) imports a command's module when the command is asked for: no
module imports its importer.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from ceap.cli.lazy import LazyGroup
from ceap.cli.listing import APP_HELP, GLOBAL_OPTIONS
from ceap.cli.validating import echo as echo  # re-exported for the command modules
from ceap.cli.validating import print_spec_errors, program_paths
from ceap.cli.validating import short_command as short_command
from ceap.errors import CeapError, SpecError

if TYPE_CHECKING:  # the spec and the stores import Arrow and DuckDB: at use, not at start-up
    from rich.console import Console

    from ceap.spec import ProgramSpec, ProjectConfig
    from ceap.store import Store


class _LazyConsole:
    """A Rich console made when first used: ``ceap validate`` prints its lines without
    Rich (see :func:`echo`), and importing Rich costs start-up time."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __enter__(self) -> Console:  # Rich's live displays enter their console
        return self._real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._real().__exit__(*exc)  # type: ignore[arg-type]

app = typer.Typer(help=APP_HELP,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  cls=LazyGroup)  # imports a command's module when the command is asked for
LazyGroup.app = app
out = cast("Console", _LazyConsole(soft_wrap=True))  # messages; results go through ceap.cli.output
err = cast("Console", _LazyConsole(stderr=True, soft_wrap=True))
#: the --json option of every command that prints a table (see ceap.cli.output)
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON (an array of rows, or one object "
                                                          "of totals) instead of a table")]


def _option_help(option: str) -> str:
    """A global option's help (:mod:`ceap.cli.listing`, which ``ceap --help`` prints from)."""
    return GLOBAL_OPTIONS[option][2]


class State:
    """The global options of this invocation."""

    project_dir: Path | None = None
    store: str | None = None
    tenant: str | None = None

    def project(self) -> ProjectConfig:
        from ceap.spec import load_project

        try:
            return load_project(self.project_dir)
        except SpecError as exc:
            fail_spec([exc])
            raise  # unreachable

    def open_store(self, project: ProjectConfig) -> Store:
        from ceap.store import open_store

        url = project.store_url(self.store)
        try:
            return open_store(url, context=project.context(self.tenant),
                              candidates=project.candidate_store)
        except Exception as exc:
            err.print(f"[red]error:[/red] cannot open store {mask(url)}: {exc}")
            raise typer.Exit(1) from None


state = State()


def mask(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: a long-running command finishes its step, then stops."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def check_status(status: str | None, known: tuple[str, ...]) -> None:
    """A usage error (exit 2) naming the known statuses when ``--status`` is none of them."""
    if status is not None and status not in known:
        raise typer.BadParameter(f"unknown status {status!r} (known: {', '.join(known)})",
                                 param_hint="--status")


NowOption = Annotated[str | None, typer.Option(
    "--now", help="act as if it were this time (ISO 8601, e.g. 2026-03-29T01:00:00Z): for tests")]


def parse_now(value: str | None) -> datetime | None:
    """A ``--now`` value as a UTC time, or exit 2 naming what is wrong with it."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        err.print(f"--now: expected an ISO 8601 time such as 2026-03-29T01:00:00Z, got {value!r}",
                  markup=False, highlight=False)
        raise typer.Exit(2) from None
    if parsed.tzinfo is None:
        err.print(f"--now: {value!r} has no time zone (add Z or +01:00)", markup=False, highlight=False)
        raise typer.Exit(2)
    return parsed.astimezone(UTC)


def fail_spec(errors: list[SpecError]) -> None:
    """Print each error's `file: field: message` lines on standard error; exit 2."""
    print_spec_errors(errors)
    raise typer.Exit(2)


@app.callback()
def main(
    project: Annotated[Path | None, typer.Option(help=_option_help("--project"))] = None,
    store: Annotated[str | None, typer.Option(help=_option_help("--store"))] = None,
    tenant: Annotated[str | None, typer.Option(help=_option_help("--tenant"))] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help=_option_help("--log-format"))] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help=_option_help("--log-level"))
                         ] = None,
) -> None:
    state.project_dir, state.store, state.tenant = project, store, tenant
    from ceap.cli.observe import setup

    setup(log_format, log_level)


def load_specs(items: list[str], project: ProjectConfig, all_: bool) -> list[ProgramSpec]:
    """The named programs (or all with ``all_``), every one valid, or exit 2."""
    from ceap.spec import load_program

    folder = project.programs_dir()
    if all_:
        items = [str(folder)] if folder.is_dir() else []
    elif not items:
        err.print("name a program (or a file), or pass --all")
        raise typer.Exit(2)
    paths = program_paths(items, project)
    if not paths:
        err.print("no program files found" + (f" in {folder}" if all_ else ""), highlight=False)
        raise typer.Exit(2)
    errors: list[SpecError] = []
    specs = []
    for path in paths:
        try:
            specs.append(load_program(path))
        except SpecError as exc:
            errors.append(exc)
        except CeapError as exc:
            errors.append(SpecError(str(path), [("", str(exc))]))
    if errors:
        fail_spec(errors)
    return specs
