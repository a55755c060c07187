"""The ``ceap`` command line; the console script is ``ceap.cli:main`` (a plain ``ceap
validate FILE...`` runs without Typer, see :mod:`ceap.cli.validating`, and so does the
top-level ``ceap --help``, see :mod:`ceap.cli.listing`; everything else runs the Typer app
``ceap.cli:app``).

One module per command group. :mod:`ceap.cli.common` holds the app, the global options
and the helpers the groups share; every group imports from it, never from ``ceap.cli``.
The app imports a command's module when the command runs (:mod:`ceap.cli.lazy`), and
every module when the commands are listed (``ceap --help``); importing ``ceap.cli`` or
``ceap.cli.output`` (used outside the CLI) costs no command module.

A new command group: write ``src/ceap/cli/<group>.py`` importing ``app`` (and what else
it needs) from ``ceap.cli.common``, then add its commands to ``COMMANDS`` and their one-line
help to ``SUMMARIES`` in :mod:`ceap.cli.listing` (``tests/test_cli_imports.py`` and
``tests/test_cli_help_plain.py`` check that they agree with the app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer


def main() -> None:
    """The ``ceap`` command (and ``python -m ceap``): ``ceap --help`` and a plain ``validate``
    without Typer, everything else through the Typer app."""
    import sys

    from ceap.cli.listing import plain_help

    code = plain_help(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from ceap.cli.validating import echo, plain_validate, run_plain

    plain = plain_validate(sys.argv[1:])
    if plain is None:
        from ceap.cli.common import app as typer_app

        typer_app()
        return
    try:
        code = run_plain(**plain)
    except (EOFError, KeyboardInterrupt):  # as Click does
        echo("", error=True)
        echo("Aborted!", error=True)
        code = 1
    sys.exit(code)


def __getattr__(name: str) -> Any:
    if name == "app":
        from ceap.cli.common import app as found

        globals()["app"] = found
        return found
    raise AttributeError(f"module 'ceap.cli' has no attribute {name!r}")
