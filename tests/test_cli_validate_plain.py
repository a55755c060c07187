"""``ceap validate`` without Typer (``ceap.cli.validating``) prints and exits exactly as the
Typer command does, and leaves every other form to Typer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ceap.cli.validating import plain_validate

ROOT = Path(__file__).resolve().parent.parent
#: the Typer app itself, whatever the arguments
THROUGH_TYPER = "import sys\nfrom ceap.cli.common import app\napp(sys.argv[1:], prog_name='ceap')"


def _run(args: list[str], cwd: Path, typer: bool) -> tuple[int, str, str]:
    command = ["-c", THROUGH_TYPER] if typer else ["-m", "ceap"]
    proc = subprocess.run(
        [sys.executable, *command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "CEAP_CACHE_DIR": ""},
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "ceap.yaml").write_text(
        (ROOT / "ceap.yaml").read_text() if (ROOT / "ceap.yaml").exists() else "{}\n"
    )
    (tmp_path / "programs").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("win_back.yaml", "abandoned_cart.yaml"):
        (tmp_path / "programs" / name).write_text((ROOT / "programs" / name).read_text())
    bad = (ROOT / "programs" / "win_back.yaml").read_text()
    bad = bad.replace('"lifetime_value >= 400"', '"lifetime_value >= "').replace("top_k: 1000", "top_k: 0")
    (tmp_path / "bad.yaml").write_text(bad)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "churned_customers.csv").write_text(
        "customer_id,churned_at,lifetime_value,months_subscribed,last_plan_price,"
        "opened_last_campaign,churn_reason\n"
    )
    (tmp_path / "templates").mkdir()
    for template in (ROOT / "templates").glob("*.yaml"):
        (tmp_path / "templates" / template.name).write_text(template.read_text())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ceap.yaml").write_text("delivery: {nonsense: 1}\n")
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "programs/win_back.yaml"],
        ["validate", "programs"],
        ["validate", "win_back", "abandoned_cart"],  # program names, from the project's folder
        ["validate", "bad.yaml", "programs/win_back.yaml"],
        ["validate", "missing.yaml"],
        ["validate", "empty"],
        ["validate", "--sources", "programs/win_back.yaml"],
        ["validate", "bad.yaml", "--sources"],
        ["--tenant", "t1", "--store", "sqlite:///x.db", "validate", "programs/win_back.yaml"],
        ["--log-level", "loud", "validate", "programs/win_back.yaml"],
        ["--project", "broken", "validate", "programs/win_back.yaml"],
    ],
)
def test_plain_validate_answers_as_typer_does(project: Path, args: list[str]) -> None:
    assert plain_validate(args) is not None  # these take the way without Typer
    assert _run(args, project, typer=False) == _run(args, project, typer=True)


def test_the_outcomes_differ_between_cases(project: Path) -> None:
    # the comparison above is not between two empty answers
    code, out, err = _run(["validate", "bad.yaml", "programs/win_back.yaml"], project, typer=False)
    assert code == 2 and out == "ok programs/win_back.yaml\n"
    assert "bad.yaml: filters[1].expr: invalid SQL expression" in err
    assert "bad.yaml: selection.top_k:" in err
    code, out, err = _run(["--log-level", "loud", "validate", "programs"], project, typer=False)
    assert (code, out) == (2, "") and err.startswith("error: ")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["validate"],
        ["validate", "--help"],
        ["validate", "-h", "a.yaml"],
        ["validate", "--", "a.yaml"],
        ["--project=x", "validate", "a.yaml"],
        ["run", "a.yaml"],
        ["--tenant", "a", "--tenant", "b", "validate", "a.yaml"],
        ["--tenant"],
        ["--tenant", "validate"],
        ["validate", "--sources", "--sources", "a.yaml"],
        ["validate", "--json", "a.yaml"],
        ["--verbose", "validate", "a.yaml"],
        ["Validate", "a.yaml"],
    ],
)
def test_every_other_form_goes_to_typer(args: list[str]) -> None:
    assert plain_validate(args) is None


def test_plain_forms() -> None:
    assert plain_validate(["--project", "p", "validate", "a.yaml", "--sources", "b"]) == {
        "project": "p",
        "paths": ["a.yaml", "b"],
        "sources": True,
    }
    assert plain_validate(["validate", "a.yaml"]) == {"paths": ["a.yaml"], "sources": False}


def test_a_wrong_command_still_gets_typer_s_answer(project: Path) -> None:
    code, _out, err = _run(["validate"], project, typer=False)
    assert code == 2 and "Missing argument" in err
