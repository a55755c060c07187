"""The ``ceap`` group: a command's module is imported when the command is asked for.

``ceap validate`` needs one command module, not all eleven with what they import.
``COMMANDS`` (:mod:`ceap.cli.listing`) names the modules of :mod:`ceap.cli` that register each command and
command group, in the order ``ceap --help`` lists them (commands, then groups).
Running a command imports its modules; listing the commands (``--help``, completion,
a mistyped name and its suggestions) imports them all.

Typer builds its commands from the app's registrations when the app runs; this group
does the same, per command, with Typer's own builders (``typer.main``), so a command's
options, help and errors are exactly Typer's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_command_name, get_group_from_info

from ceap.cli.listing import COMMANDS as COMMANDS  # the table lives where no Typer is imported

if TYPE_CHECKING:
    from typer import _click as click  # Typer's own Click (typer>=0.29, see pyproject.toml)



class LazyGroup(TyperGroup):
    """A Typer group that turns the app's registrations into commands when asked for."""

    #: the app whose registrations this group follows (set by :mod:`ceap.cli.common`)
    app: ClassVar[typer.Typer]

    def __init__(self, **attrs: Any):
        super().__init__(**attrs)
        #: commands built after all their modules were imported (Typer builds the ones
        #: registered before it runs, maybe with a group's commands from one module only)
        self._complete: set[str] = set()

    def _load(self, names: list[str]) -> None:
        """Import the modules of ``names`` and build those commands (every registered one
        when ``names`` is every command)."""
        for name in names:
            for module in COMMANDS.get(name, ()):
                importlib.import_module(f"ceap.cli.{module}")
        everything = set(names) >= set(COMMANDS)
        app = self.app
        for info in app.registered_commands:
            name = info.name or get_command_name(info.callback.__name__)  # type: ignore[union-attr]
            if name not in self._complete and (everything or name in names):
                self.commands[name] = get_command_from_info(
                    info, pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode)
                self._complete.add(name)
        for group in app.registered_groups:
            name = group.name or ""
            if name and name not in self._complete and (everything or name in names):
                self.commands[name] = get_group_from_info(
                    group, pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode, suggest_commands=app.suggest_commands)
                self._complete.add(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._complete:
            # an unknown name loads everything: the error then suggests among all commands
            self._load([cmd_name] if cmd_name in COMMANDS else list(COMMANDS))
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load(list(COMMANDS))
        order = {name: i for i, name in enumerate(COMMANDS)}
        return sorted(self.commands, key=lambda name: order.get(name, len(order)))
