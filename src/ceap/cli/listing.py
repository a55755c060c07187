"""The commands of ``ceap`` and its global options, without Typer: the table the app loads
commands from (:mod:`ceap.cli.lazy`), and ``ceap --help`` printed without Typer.

Importing Typer, Click and Rich, and every command module to list the commands, is most of
the time of ``ceap --help``. The console script (``ceap.cli:main``) prints the top-level
help from these tables when the arguments are exactly ``--help`` (or none: then the help,
exit 2, as the Typer app does); ``ceap COMMAND --help`` and everything else goes to Typer.
The one-line texts are each command's own (the first paragraph of its help, as Typer's
``ceap --help`` shows it); ``tests/test_cli_help_plain.py`` compares the two so they cannot
drift, and the Typer app takes the global options' help from here.

Nothing here imports Typer, Rich or the command modules.
"""

from __future__ import annotations

import os
import sys

#: what ``ceap`` is, atop its help
APP_HELP = "CEAP: find the customers who need an action now, and act."

#: the global options of ``ceap`` (``ceap.cli.common.main``), each taking one value:
#: option -> (parameter, metavar, help)
GLOBAL_OPTIONS: dict[str, tuple[str, str, str]] = {
    "--project": ("project", "PATH", "project folder holding ceap.yaml"),
    "--store": ("store", "TEXT", "store URL (beats CEAP_STORE and ceap.yaml)"),
    "--tenant": ("tenant", "TEXT", "tenant id (default: ceap.yaml's)"),
    "--log-format": ("log_format", "TEXT", "logs on stderr: json, text or auto (json unless stderr is "
                                           "a terminal; default: CEAP_LOG_FORMAT, else auto)"),
    "--log-level": ("log_level", "TEXT",
                    "debug, info, warning or error (default: CEAP_LOG_LEVEL, else warning)"),
}
HELP_OPTION = ("--help", "Show this message and exit.")  # Click's

#: command or command group -> the ceap.cli modules that register it, in --help order
COMMANDS: dict[str, tuple[str, ...]] = {
    "audit": ("admin",),
    **dict.fromkeys(["validate", "run", "candidates", "runs", "quarantine", "sweep", "plugins",
                     "train", "demo"], ("batch",)),
    **dict.fromkeys(["dispatch", "profiles", "serve", "preview"], ("delivery",)),
    "digests": ("digests",),
    "journey": ("journeys",),
    **dict.fromkeys(["worker", "publish"], ("realtime",)),
    **dict.fromkeys(["scheduler", "schedule"], ("schedule",)),
    "apikey": ("admin",),
    "deliveries": ("delivery", "held"),
    "report": ("report", "experiments"),
    "experiments": ("experiments",),
    "journeys": ("journeys",),
    "migrate": ("migrate",),
    "outcomes": ("outcomes",),
    "customer": ("privacy",),
}

#: command -> its one-line help: the first paragraph of its help, lines joined
SUMMARIES: dict[str, str] = {
    "audit": "The audit log, newest first: who did what to what, when and from where.",
    "validate": "Check program specs. Exit 0 when all are valid; 2 with `file: field: message` lines.",
    "run": "Run programs once over their sources; print each funnel. One failing program does not "
           "stop the others; the exit code is 1 if any failed.",
    "candidates": "Query the candidate store.",
    "runs": "Recent runs with their status and counts.",
    "quarantine": "Rows a run set aside, with the reason for each.",
    "sweep": "Delete expired candidates (all tenants, or --tenant's); held-out ones are kept, and so "
             "are all until the longest goal window after their expiry has passed.",
    "plugins": "The installed plugins of each kind (built-in and third-party alike).",
    "train": "Train a model from a table and write it as a versioned artefact with its metadata.",
    "demo": "Generate seeded demo data and run the demo programs on the embedded store.",
    "dispatch": "Send due candidates: apply policies, render, deliver with retries and fallbacks.",
    "profiles": "Load customer profiles (e-mail, phone, push token, time zone, locale, attributes).",
    "serve": "Serve the HTTP API (candidates for client apps, the in-app inbox, callbacks, /metrics) "
             "and the dashboard at /ui.",
    "preview": "Render what a customer would get from a program, on each of its channels.",
    "digests": "Digests, latest due first: customer, key, window, when due, items held, and the digest "
               "message (a candidate: `ceap candidates`, `ceap deliveries --candidate ID`).",
    "journey": "A journey: its graph (--plot), a customer's place (--customer), or how many are where.",
    "worker": "Run the real-time programs over a stream: micro-batches, state, candidates; and tick "
              "the journeys.",
    "publish": "Validate events from a file and append them to a stream (replays, backfills). Exit 0; "
               "1 when some events were rejected (the others are published); 2 when a line is not "
               "JSON (nothing is published).",
    "scheduler": "Run each program on its schedule, then dispatch what is due. Of several schedulers "
                 "on one store, one is active; SIGTERM or Ctrl-C stops it after the current step.",
    "schedule": "Each program's schedule, time zone, catch-up policy, last run and next runs. A program "
                "file that does not load is reported (exit 2) and the others are listed.",
    "apikey": "API keys of the HTTP API: create, list, revoke.",
    "deliveries": "Delivery attempts; resolve those a crash left held.",
    "report": "Reports over what the platform decided and delivered.",
    "experiments": "Experiments: bandit updates and online learning from outcomes.",
    "journeys": "Journeys: enter and advance customers (`ceap journeys tick`).",
    "migrate": "Schema migrations of the store: upgrade, print the SQL, status.",
    "outcomes": "Goal events, attribution and the outbound stream of outcomes.",
    "customer": "A customer's data: export, delete, consent history.",
}


def program_name() -> str:
    """How the user called ``ceap`` (``python -m ceap`` for a module run), as Click names it."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else "ceap"
    package = getattr(sys.modules.get("__main__"), "__package__", None)
    if not package:
        return os.path.basename(path)
    name = os.path.splitext(os.path.basename(path))[0]
    return f"python -m {package if name == '__main__' else f'{package}.{name}'}"


def terminal_width() -> int:
    """``COLUMNS`` if set, else the terminal's width (80 when not a terminal), at most 100."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        width = int(columns)
    else:
        try:
            width = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 80
    return max(40, min(width, 100))


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters (a longer word has its own line)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def _rows(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Two columns: each name, then its text wrapped beside it."""
    first = max(len(name) for name, _ in rows) + 2
    out = []
    for name, text in rows:
        lines = _wrap(text, max(20, width - 2 - first)) or [""]
        out.append(f"  {name.ljust(first)}{lines[0]}".rstrip())
        out.extend(f"  {' ' * first}{line}" for line in lines[1:])
    return out


def top_help(prog: str | None = None, width: int | None = None) -> str:
    """The text of ``ceap --help``: usage, what ceap is, the global options, the commands."""
    prog = prog or program_name()
    width = width or terminal_width()
    options = [(f"{opt} {metavar}", text) for opt, (_, metavar, text) in GLOBAL_OPTIONS.items()]
    lines = [f"Usage: {prog} [OPTIONS] COMMAND [ARGS]...", "",
             *(f"  {line}" for line in _wrap(APP_HELP, width - 2)), "",
             "Options:", *_rows([*options, HELP_OPTION], width), "",
             "Commands:", *_rows([(name, SUMMARIES[name]) for name in COMMANDS], width)]
    return "\n".join(lines) + "\n"


def plain_help(args: list[str]) -> int | None:
    """Print the top-level help when ``args`` ask for it (exactly ``--help``; or nothing, as a
    usage error); the exit code, or None for any other arguments (the Typer app decides)."""
    if args not in ([], ["--help"]):
        return None
    sys.stdout.write(top_help())
    sys.stdout.flush()
    return 0 if args else 2
