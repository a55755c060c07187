"""The command table of docs/cli.md names every command of ``ceap``, each linking to its
section."""

from __future__ import annotations

import re
from pathlib import Path

from ceap.cli.lazy import COMMANDS

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def table_rows() -> list[tuple[str, str]]:
    """(command, anchor) of each row of the table under the usage line."""
    text = CLI_MD.read_text()
    table = text[: text.index("\n## ")]
    return re.findall(r"^\| \[`([a-z ]+)`\]\(#([a-z0-9-]+)\) \|", table, flags=re.M)


def test_every_command_is_in_the_table() -> None:
    documented = {command.split()[0] for command, _ in table_rows()}
    assert documented == set(COMMANDS)


def test_each_row_links_to_the_commands_section() -> None:
    headings = re.findall(r"^## `ceap ([a-z ]+)`$", CLI_MD.read_text(), flags=re.M)
    rows = table_rows()
    assert rows
    for command, anchor in rows:
        assert command in headings, command
        assert anchor == "ceap-" + command.replace(" ", "-")
