"""The ``ceap`` command line's import structure: no import cycles through ``ceap.cli``, and
start-up (``--help``, ``validate``) imports none of the heavy libraries."""

from __future__ import annotations

import gc
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_through_the_cli_package() -> None:
    # every import counts, also those inside functions: a module of ceap.cli never
    # reaches itself again through what it imports
    graph = grimp.build_graph("ceap")
    cycles = []
    for module in sorted(graph.find_descendants("ceap.cli") | {"ceap.cli"}):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if graph.chain_exists(imported=module, importer=imported):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.append(f"{module} -> {' -> '.join(chain or ())}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_command_modules_import_common_not_the_package() -> None:
    graph = grimp.build_graph("ceap")
    for module in graph.find_descendants("ceap.cli"):
        assert not graph.direct_import_exists(importer=module, imported="ceap.cli"), module


HEAVY = ("duckdb", "pyarrow", "polars", "pandas", "lightgbm", "xgboost", "sklearn", "onnxruntime",
         "statsmodels", "scipy", "fastapi", "uvicorn", "jinja2", "redis", "river")


#: ``ceap ARGS`` in-process; it must succeed
RUN_CLI = ("from ceap.cli import app\n"
           "try:\n    app(sys.argv[1:])\n"
           "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code")


def _imported_after(code: str, *argv: str, modules: tuple[str, ...] = HEAVY,
                    env: dict[str, str] | None = None) -> list[str]:
    """The heavy libraries in sys.modules after running ``code`` in a fresh interpreter."""
    probe = (f"import sys\n{code}\n"
             f"print('loaded:', *(m for m in {modules!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.rsplit("loaded:", 1)[1].split()


def test_importing_the_cli_imports_no_heavy_library() -> None:
    assert _imported_after("import ceap.cli\nfrom ceap.cli import app") == []


def test_help_imports_no_heavy_library() -> None:
    assert _imported_after(RUN_CLI, "--help") == []
    assert _imported_after(RUN_CLI, "report", "--help") == []


ENGINES = (*HEAVY, "numpy", "httpx", "psycopg", "_duckdb")  # _duckdb: DuckDB's compiled module


def test_validate_imports_no_engine(tmp_path: Path) -> None:
    # validating win_back (SQL features and filters, an expression scorer, a template) reads
    # the spec (pydantic), the plugins' config models and the template (Jinja2, until the
    # template has passed once: ceap.delivery.templates.checks.passed_sources); its SQL is
    # inside what the quick check (ceap.sqlsyntax) knows DuckDB parses: DuckDB is not started,
    # neither the first time nor with nothing remembered
    cache = {"CEAP_CACHE_DIR": str(tmp_path / "cache")}
    first = _imported_after(RUN_CLI, "validate", "programs/win_back.yaml", modules=ENGINES, env=cache)
    assert first == ["jinja2"], first
    no_cache = _imported_after(RUN_CLI, "validate", "programs/win_back.yaml", modules=ENGINES,
                               env={"CEAP_CACHE_DIR": ""})
    assert no_cache == ["jinja2"], no_cache
    # SQL outside the quick check's subset: DuckDB's parser the first time (without its
    # Python layer), then the expression is remembered (ceap.sqlcache)
    program = tmp_path / "typed_literal.yaml"
    program.write_text((ROOT / "programs" / "win_back.yaml").read_text().replace(
        '"lifetime_value >= 400"', '"lifetime_value >= INTEGER \'400\'"'))
    # (its template passed above and is remembered too: no Jinja2)
    first = _imported_after(RUN_CLI, "validate", str(program), modules=ENGINES, env=cache)
    assert first == ["_duckdb"], first
    again = _imported_after(RUN_CLI, "validate", str(program), modules=ENGINES, env=cache)
    assert again == [], again
    # checking the template needs its names, not the renderer and the delivery policies
    rendering = ("ceap.delivery.templates.renderer", "ceap.delivery.policies", "ceap.store.schema")
    assert _imported_after(RUN_CLI, "validate", "programs/win_back.yaml", modules=rendering,
                           env={"CEAP_CACHE_DIR": ""}) == []


def test_validating_every_example_program_imports_no_engine(tmp_path: Path) -> None:
    # all of programs/: CSV, Parquet and event sources, expression, LightGBM and item-affinity
    # scorers (their model files' metadata are read, the models are not loaded)
    # (and their SQL is inside the quick check's subset: DuckDB is not started, even the first time)
    # (the templates that passed are remembered: no Jinja2 the second time)
    cache = {"CEAP_CACHE_DIR": str(tmp_path / "cache")}
    for expected in (["jinja2"], []):
        loaded = _imported_after(RUN_CLI, "validate", "programs", modules=ENGINES, env=cache)
        assert loaded == expected, loaded


def test_validate_catches_sql_errors_whatever_is_remembered(tmp_path: Path) -> None:
    good = (ROOT / "programs" / "win_back.yaml").read_text()
    bad = good.replace('"lifetime_value >= 400"', '"lifetime_value >= "')
    assert bad != good
    env = {**os.environ, "CEAP_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "300"}
    (tmp_path / "win_back.yaml").write_text(good)
    for text, code in ((good, 0), (bad, 2), (bad, 2)):  # the good one first: its SQL is remembered
        (tmp_path / "win_back.yaml").write_text(text)
        proc = subprocess.run([sys.executable, "-m", "ceap", "validate", str(tmp_path / "win_back.yaml")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == code, proc.stdout + proc.stderr
    assert "filters[1].expr: invalid SQL expression" in proc.stderr, proc.stderr


SIMPLE_PROGRAM = """\
source: {type: csv, path: data/churned_customers.csv, customer_id: customer_id}
action: {type: offer, channels: [email]}
"""


def test_validate_loads_only_the_plugins_the_program_names(tmp_path: Path) -> None:
    # the registry lists every plugin's entry point but imports only the csv connector here:
    # no other connector's, filter's, scorer's or channel's libraries (DuckDB, HTTP, drivers)
    program = tmp_path / "simple.yaml"
    program.write_text(SIMPLE_PROGRAM + "schedule: weekly\n")  # a word: croniter not needed
    watched = (*HEAVY, "httpx", "psycopg", "ceap.connectors.sql", "ceap.scorers.expression",
               "ceap.filters.expression", "ceap.channels.email_smtp", "croniter", "rich")
    loaded = _imported_after(RUN_CLI, "validate", str(program), modules=watched)
    # nor Arrow or NumPy: the plugin base classes and the csv connector import them where rows
    # are read; Jinja2 comes only for a program with a template
    assert loaded == [], loaded


def test_an_unknown_type_still_lists_every_installed_plugin(tmp_path: Path) -> None:
    program = tmp_path / "typo.yaml"
    program.write_text(SIMPLE_PROGRAM.replace("type: csv", "type: cvs"))
    proc = subprocess.run([sys.executable, "-m", "ceap", "validate", str(program)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ,
                                                                             "COLUMNS": "300"})
    assert proc.returncode == 2
    text = " ".join(proc.stdout.split() + proc.stderr.split())
    assert "source.type: unknown connector type 'cvs'" in text, text
    assert "csv" in text.split("installed:", 1)[1] and "parquet" in text.split("installed:", 1)[1]


COMMAND_MODULES = tuple(f"ceap.cli.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "src/ceap/cli")])
                        if m.name not in ("common", "lazy", "listing", "output", "observe", "validating"))


def test_the_command_table_names_the_modules_of_every_command() -> None:
    # ceap.cli.lazy.COMMANDS says which modules to import for a command: it must list every
    # command of every module, each with all the modules that register its parts
    from typer.main import get_command_name

    from ceap.cli.common import app
    from ceap.cli.lazy import COMMANDS

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    found: dict[str, set[str]] = {}
    for info in app.registered_commands:
        assert info.callback is not None
        found[info.name or get_command_name(info.callback.__name__)] = {info.callback.__module__}
    for group in app.registered_groups:
        sub = group.typer_instance
        assert group.name and sub is not None
        found[group.name] = {c.callback.__module__ for c in sub.registered_commands if c.callback}
        if sub.registered_callback and sub.registered_callback.callback:
            found[group.name].add(sub.registered_callback.callback.__module__)
    assert set(found) == set(COMMANDS)
    for name, modules in found.items():
        assert modules <= {f"ceap.cli.{m}" for m in COMMANDS[name]}, (name, modules)


def test_a_command_imports_only_its_modules(tmp_path: Path) -> None:
    program = tmp_path / "simple.yaml"
    program.write_text(SIMPLE_PROGRAM)
    watched = (*COMMAND_MODULES, "rich")
    assert _imported_after(RUN_CLI, "validate", str(program), modules=watched) == ["ceap.cli.batch"]
    # listing the commands imports them all, and lists them in the table's order
    assert sorted(_imported_after(RUN_CLI, "--help", modules=watched)) == sorted([*COMMAND_MODULES, "rich"])


def test_help_lists_every_command_in_order() -> None:
    from ceap.cli.lazy import COMMANDS

    code = "from ceap.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    typer_help = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    listed = [line[2:].split()[0] for line in typer_help.stdout.split("Commands", 1)[1].splitlines()
              if line.startswith("│ ") and not line[2:3].isspace()]  # not a wrapped help line
    assert listed == list(COMMANDS)
    # the plain `ceap --help` (ceap.cli.listing) too
    proc = subprocess.run([sys.executable, "-m", "ceap", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.split("Commands:", 1)[1].splitlines()
              if line.startswith("  ") and not line[2:3].isspace()]
    assert listed == list(COMMANDS)


def test_a_mistyped_command_suggests_among_all_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "ceap", "deliverise"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "No such command 'deliverise'. Did you mean 'deliveries'?" in proc.stderr, proc.stderr


def test_uplift_help_names_the_report_choices() -> None:
    from ceap.cli.experiments import UPLIFT_BY
    from ceap.experiments.uplift import BY_CHOICES

    assert UPLIFT_BY == BY_CHOICES


def test_a_group_is_complete_whatever_was_imported_before() -> None:
    # `report` has commands in ceap.cli.report and ceap.cli.experiments: with only the first
    # imported when the app starts, `report bandit` still resolves
    code = ("import sys\nimport ceap.cli.report\nfrom ceap.cli import app\n"
            "try:\n    app(['report', 'bandit', '--help'])\n"
            "except SystemExit as exc:\n    sys.exit(exc.code)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "Usage: " in proc.stdout and "bandit" in proc.stdout


def test_a_short_command_collects_rarely_and_not_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    from ceap.cli import common, validating

    registered: list[object] = []
    monkeypatch.setattr(validating.atexit, "register", registered.append)
    monkeypatch.setattr(validating, "_at_exit", [])
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    before = gc.get_threshold()
    for _ in range(2):
        with common.short_command():
            assert gc.get_threshold()[0] >= 50_000
            assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"  # not looked up
        assert gc.get_threshold() == before
        assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    assert registered == [gc.freeze]  # once
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "logfire")  # the user's own choice is kept
    with common.short_command():
        assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"


def test_plain_validate_imports_no_typer(tmp_path: Path) -> None:
    # `ceap validate FILE` (the console script, python -m ceap) runs without Typer, Click or
    # Rich, and without the command modules; and without DuckDB for win_back's SQL
    code = ("sys.argv = ['ceap', 'validate', 'programs/win_back.yaml']\nfrom ceap.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code")
    watched = ("typer", "click", "rich", "ceap.cli.common", "ceap.cli.batch", *ENGINES)
    assert _imported_after(code, modules=watched, env={"CEAP_CACHE_DIR": ""}) == ["jinja2"]
