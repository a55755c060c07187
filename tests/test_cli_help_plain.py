"""``ceap --help`` without Typer (:mod:`ceap.cli.listing`) says what the Typer app's help says:
the same commands in the same order, the same one-line texts, the same global options."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ceap.cli import listing

ROOT = Path(__file__).resolve().parent.parent


def _typer_group():  # type: ignore[no-untyped-def]
    import typer.main

    from ceap.cli.common import app

    return typer.main.get_command(app)


def test_the_tables_agree_with_the_typer_app() -> None:
    import typer

    group = _typer_group()
    ctx = typer._click.Context(group, info_name="ceap")
    names = group.list_commands(ctx)
    assert names == list(listing.COMMANDS) == list(listing.SUMMARIES)
    for name in names:
        command = group.get_command(ctx, name)
        assert command is not None
        # what Typer's help shows for a command: the first paragraph of its help
        text = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        assert listing.SUMMARIES[name] == " ".join(text.split()), name
    assert group.help == listing.APP_HELP
    options = {param.opts[0]: param.help for param in group.params if param.opts[0] != "--help"}
    assert options == {opt: text for opt, (_, _, text) in listing.GLOBAL_OPTIONS.items()}
    assert {opt: param for opt, (param, _, _) in listing.GLOBAL_OPTIONS.items()} == {
        param.opts[0]: param.name for param in group.params if param.opts[0] != "--help"}


def _words(text: str) -> list[str]:
    """The words of a help section, without boxes and metavars (Typer's ``<path>``, Click's PATH)."""
    return [w for w in text.translate(str.maketrans("", "", "╭─╮│╰╯")).split()
            if not re.fullmatch(r"<\w+>|PATH|TEXT", w)]


def _sections(text: str, options: str, commands: str) -> tuple[list[str], list[str]]:
    before, after = text.split(commands, 1)
    return _words(before.split(options, 1)[1]), _words(after)


def test_plain_help_says_what_the_typer_help_says() -> None:
    env = {**os.environ, "COLUMNS": "300"}
    code = "from ceap.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    typer_help = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, env=env).stdout
    plain = subprocess.run([sys.executable, "-m", "ceap", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env=env)
    assert plain.returncode == 0, plain.stderr
    typer_options, typer_commands = _sections(typer_help, "Options", "Commands")
    plain_options, plain_commands = _sections(plain.stdout, "Options:", "Commands:")
    assert plain_commands == typer_commands
    assert plain_options == typer_options
    assert listing.APP_HELP in typer_help and listing.APP_HELP in plain.stdout
    assert plain.stdout.startswith("Usage: python -m ceap [OPTIONS] COMMAND [ARGS]...\n")


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), ([], 2)])
def test_plain_help_runs_without_typer(argv: list[str], code: int) -> None:
    # no arguments prints the help too, and exits 2 (as the Typer app does: no_args_is_help)
    probe = ("import sys\nsys.argv = ['ceap', *sys.argv[1:]]\nfrom ceap.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "watched = ('typer', 'click', 'rich', 'ceap.cli.common', 'ceap.cli.batch', 'pydantic')\n"
             "print('exit:', code, 'loaded:', *(m for m in watched if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert proc.stdout.startswith("Usage: ceap [OPTIONS] COMMAND [ARGS]...\n"), proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith(f"exit: {code} loaded:"), proc.stdout


@pytest.mark.parametrize("argv", [["-h"], ["--help", "validate"], ["validate", "--help"],
                                  ["--project", ".", "--help"], ["audit"]])
def test_other_arguments_go_to_typer(argv: list[str]) -> None:
    assert listing.plain_help(argv) is None


def test_the_help_fits_the_width() -> None:
    text = listing.top_help("ceap", 60)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert " ".join(text.split()).count("Show this message and exit.") == 1
    for name, summary in listing.SUMMARIES.items():  # each text whole, beside its command
        assert f" {name} {summary} " in " ".join(text.split()) + " ", name


def test_program_name_is_clicks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/ceap", "--help"])
    main = type(sys)("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert listing.program_name() == "ceap"
    main.__package__ = "ceap"
    monkeypatch.setattr(sys, "argv", ["/src/ceap/__main__.py", "--help"])
    assert listing.program_name() == "python -m ceap"
