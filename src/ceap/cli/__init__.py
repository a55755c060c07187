"""The ``ceap`` command line; the console script is ``ceap.cli:app``.

One module per command group. :mod:`ceap.cli.common` holds the app, the global options
and the helpers the groups share; every group imports from it, never from ``ceap.cli``.
Asking for ``ceap.cli.app`` imports the groups listed below, which registers their
commands; until then nothing is imported, so ``ceap.cli.output`` (used outside the CLI)
costs no command module.

A new command group: write ``src/ceap/cli/<group>.py`` importing ``app`` (and what else
it needs) from ``ceap.cli.common``, then add it to the import list in ``_register``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer


def _register() -> typer.Typer:
    # `ceap --help` lists the commands in the order they are registered, so in this
    # order (``experiments`` imports ``report`` first)
    from ceap.cli import (  # noqa: F401 - each registers its commands
        admin,
        batch,
        delivery,
        experiments,
        held,
        journeys,
        migrate,
        outcomes,
        privacy,
        realtime,
        report,
        schedule,
    )
    from ceap.cli.common import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        globals()["app"] = found = _register()
        return found
    raise AttributeError(f"module 'ceap.cli' has no attribute {name!r}")
