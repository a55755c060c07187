"""What the CLI prints: tables at a terminal, tab-separated lines (nothing wrapped or cut)
when standard output is not one, and ``--json`` on every command that prints a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ceap.cli import app
from ceap.model import DEFAULT_TENANT
from ceap.store import open_store
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program

runner = CliRunner()
PROGRAM = "dq_five_quarantine_check"
NOT_A_TERMINAL = {"TTY_COMPATIBLE": None, "FORCE_COLOR": None, "COLUMNS": "80"}


def piped(*args: str) -> Result:
    """The command with standard output not a terminal (CliRunner's is a buffer)."""
    result = runner.invoke(app, list(args), env=NOT_A_TERMINAL)
    assert result.exit_code == 0, result.output
    return result


def tsv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows; every line must have as many fields as the header."""
    header, *lines = text.rstrip("\n").split("\n")
    columns = header.split("\t")
    rows = []
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == len(columns), f"{line!r} does not have the columns {columns}"
        rows.append(dict(zip(columns, fields, strict=True)))
    return columns, rows


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    (tmp_path / "programs").mkdir()
    action = {**base_program()["action"], "channels": ["inapp"]}
    write_program(tmp_path / "programs" / f"{PROGRAM}.yaml", base_program(name=PROGRAM, action=action))
    assert runner.invoke(app, ["run", PROGRAM]).exit_code == 0
    return tmp_path


def store_of(project: Path) -> Any:
    return open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")


def run_id_of(project: Path) -> str:
    store = store_of(project)
    try:
        return store.runs(DEFAULT_TENANT)[0].run_id
    finally:
        store.close()


def test_runs_piped_keeps_whole_run_ids(project: Path) -> None:
    run_id = run_id_of(project)
    assert len(run_id) > 20
    columns, rows = tsv(piped("runs").stdout)
    assert columns[:3] == ["run_id", "program", "status"]
    assert [(r["run_id"], r["program"], r["status"]) for r in rows] == [(run_id, PROGRAM, "succeeded")]
    assert "…" not in piped("runs").stdout and "\x1b[" not in piped("runs").stdout


def test_quarantine_piped_is_one_reason_tab_row_line_per_row(project: Path) -> None:
    result = piped("quarantine", run_id_of(project))
    columns, rows = tsv(result.stdout)
    assert columns == ["reason", "row"]
    assert len(rows) == 2 and "2 quarantined row(s)" in result.stderr
    assert any("column signup: not a valid date" in r["reason"] for r in rows)
    for r in rows:  # each row is whole JSON on its own line, however long
        assert isinstance(json.loads(r["row"]), dict)
    assert any(len(line) > 80 for line in result.stdout.splitlines())


def test_quarantine_json(project: Path) -> None:
    data = json.loads(piped("quarantine", run_id_of(project), "--json").stdout)
    assert len(data) == 2 and {"reason", "row"} == set(data[0]) and isinstance(data[0]["row"], dict)


def test_candidates_show_why_a_candidate_is_where_it_is(project: Path) -> None:
    store = store_of(project)
    try:
        with store.tx() as tx:
            tx.execute("UPDATE candidates SET status = 'cancelled', status_reason = ? WHERE customer_id = ?",
                       ("cancelled by purchase event ev-42", "c5"))
    finally:
        store.close()
    [c5] = json.loads(piped("candidates", "--customer", "c5", "--json").stdout)
    assert c5["status"] == "cancelled" and c5["status_reason"] == "cancelled by purchase event ev-42"
    assert c5["not_before"].count("T") == 1  # ISO 8601, like every time --json prints
    columns, rows = tsv(piped("candidates", "--status", "cancelled").stdout)
    assert "status_reason" in columns
    assert [(r["customer_id"], r["status_reason"]) for r in rows] == [
        ("c5", "cancelled by purchase event ev-42")]


def test_deliveries_piped_and_json(project: Path) -> None:
    assert runner.invoke(app, ["dispatch"]).exit_code == 0
    columns, rows = tsv(piped("deliveries").stdout)
    assert columns[:6] == ["id", "candidate_id", "program", "customer_id", "channel", "status"]
    assert {(r["program"], r["channel"], r["status"]) for r in rows} == {(PROGRAM, "inapp", "delivered")}
    data = json.loads(piped("deliveries", "--json").stdout)
    assert {d["customer_id"] for d in data} == {"c1", "c5"} and "idempotency_key" in data[0]


def test_dispatch_piped_and_json(project: Path) -> None:
    columns, rows = tsv(piped("dispatch").stdout)
    assert columns == ["outcome", "count"]
    counts = {r["outcome"]: int(r["count"]) for r in rows}
    assert counts["claimed"] == 2 and counts["sent"] == 2 and counts["dead"] == 0
    again = json.loads(piped("dispatch", "--json").stdout)
    assert again["run"]["claimed"] == 0 and "ambiguous" in again["run"]
    assert set(again["store"]) == {"queued", "sending", "held", "possible_duplicates", "dead"}


def test_runs_json(project: Path) -> None:
    [run] = json.loads(piped("runs", "--json").stdout)
    assert run["run_id"] == run_id_of(project) and run["funnel"]["quarantined"] == 2


def test_plugins_piped_and_json(project: Path) -> None:
    columns, rows = tsv(piped("plugins").stdout)
    assert columns == ["kind", "type", "implementation", "package"]
    assert {"kind": "channel", "type": "apprise", "implementation":
            "ceap.channels.apprise_bridge:AppriseChannel", "package": "ceap"} in rows
    data = json.loads(piped("plugins", "--json").stdout)
    [postgres] = [p for p in data if p["type"] == "postgres"]
    assert postgres["kind"] == "store" and postgres["package"] == "ceap"


def test_run_piped_prints_every_funnel_stage(project: Path) -> None:
    columns, rows = tsv(piped("run", PROGRAM).stdout)
    assert columns == ["program", "stage", "rows", "removed"]
    assert {r["program"] for r in rows} == {PROGRAM}
    assert "after filter: big_cart" in {r["stage"] for r in rows}


def test_a_terminal_gets_tables(project: Path) -> None:
    env = {"TTY_COMPATIBLE": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    result = runner.invoke(app, ["runs"], env=env)
    assert result.exit_code == 0, result.output
    assert "┏" in result.stdout and "\t" not in result.stdout
    assert run_id_of(project) in result.stdout and "started" in result.stdout
    narrow = runner.invoke(app, ["runs"], env={**env, "COLUMNS": "60"}).stdout
    assert "…" not in narrow  # long values fold onto more lines of their cell, never cut
    body = narrow[narrow.index("┡"):narrow.index("└")].splitlines()[1:]
    assert "".join(line.split("│")[1].strip() for line in body) == run_id_of(project)


def test_values_with_tabs_or_new_lines_stay_on_their_line() -> None:
    from datetime import UTC, datetime

    from ceap.cli.output import Column, Sheet
    from ceap.cli.output import tsv as render

    sheet = Sheet("t", [Column("a"), Column("b")])
    sheet.add("x\ty", "first\nsecond\r")
    sheet.add(None, datetime(2026, 11, 25, 23, 52, 56, tzinfo=UTC))
    other = Sheet("u", [Column("c")])
    other.add(True)
    assert render([sheet, other]) == ("a\tb\nx\\ty\tfirst\\nsecond\\r\n\t2026-11-25T23:52:56+00:00"
                                      "\n\nc\ntrue")


def test_plugins_at_an_80_column_terminal_folds_the_implementation_never_cuts_it() -> None:
    """Each implementation is whole once the lines of its (folded) cell are joined."""
    from ceap.registry import default_registry

    result = runner.invoke(app, ["plugins"], env={"TTY_COMPATIBLE": "1", "COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    body = result.stdout[result.stdout.index("┡"):result.stdout.index("└")].splitlines()[1:]
    assert "…" not in result.stdout and max(map(len, body)) <= 80
    shown, cell = [], ""
    for line in body:
        kind, implementation = line.split("│")[1].strip(), line.split("│")[3].strip()
        if kind and cell:  # a new row starts: the previous cell is complete
            shown.append(cell)
            cell = ""
        cell += implementation
    shown.append(cell)
    assert shown == [info.target for info in default_registry().info()]


@pytest.mark.parametrize("command", ["candidates", "deliveries"])
def test_an_unknown_status_is_a_usage_error_naming_the_statuses(project: Path, command: str) -> None:
    result = runner.invoke(app, [command, "--status", "pendng"], env=NOT_A_TERMINAL)
    assert result.exit_code == 2
    assert "--status" in result.output and "'pendng'" in result.output
    assert ("pending" if command == "candidates" else "queued") in result.output


def test_dispatch_names_the_channels_ceap_yaml_lacks(project: Path) -> None:
    action = {**base_program()["action"], "channels": ["email"]}
    write_program(project / "programs" / "mail_only.yaml", base_program(name="mail_only", action=action))
    assert runner.invoke(app, ["run", "mail_only"]).exit_code == 0
    result = piped("dispatch")
    said = " ".join(result.stderr.split())
    assert ("no channel named email in ceap.yaml (configured: inapp): candidates on only such "
            "channels were suppressed as no_channel") in said
    assert "no channel named" not in " ".join(piped("dispatch").stderr.split())  # nothing new: quiet


def test_dispatch_on_configured_channels_says_nothing_of_them(project: Path) -> None:
    assert "no channel named" not in piped("dispatch").stderr
