"""The worked examples of docs/realtime.md, read from the page: each program validates and,
fed the events shown (``ceap publish``, then ``ceap worker --until-idle``), writes the
candidates the page describes."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ceap.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _examples() -> dict[str, tuple[str, list[str]]]:
    page = (ROOT / "docs" / "realtime.md").read_text()
    found = {}
    for part in re.split(r"\n### ", page[page.index("## Worked examples"):])[1:]:
        blocks = re.findall(r"```(\w*)\n(.*?)```", part, re.S)
        program = next(text for kind, text in blocks if kind == "yaml")
        events = [text for kind, text in blocks if not kind and text.lstrip().startswith("{")]
        found[re.search(r"^name: (\w+)", program, re.M).group(1)] = (program, events)  # type: ignore[union-attr]
    return found


EXAMPLES = _examples()


def test_the_page_has_its_five_examples() -> None:
    assert set(EXAMPLES) == {"app_crashes", "takeover", "no_purchase", "back_in_stock", "kyc_chase"}


def _run(root: Path, name: str) -> list[list[dict[str, Any]]]:
    """Validate the example, then publish each events block and run the worker; the
    candidates after each block."""
    program, events = EXAMPLES[name]
    (root / "programs").mkdir()
    (root / "programs" / f"{name}.yaml").write_text(program)
    if "wishlists.parquet" in program:
        (root / "data").mkdir()
        pq.write_table(pa.table({"item_id": ["SKU-1", "SKU-1", "SKU-2"], "customer_id": ["A", "B", "C"],
                                 "added_at": [date(2026, 11, 1), date(2026, 11, 10), date(2026, 11, 12)]}),
                       root / "data" / "wishlists.parquet")
    result = runner.invoke(app, ["validate", "programs"])
    assert result.exit_code == 0, result.output
    after = []
    for i, block in enumerate(events):
        (root / f"events{i}.jsonl").write_text(block)
        assert runner.invoke(app, ["publish", f"events{i}.jsonl"]).exit_code == 0
        result = runner.invoke(app, ["worker", "--until-idle"])
        assert result.exit_code == 0, result.output
        listed = runner.invoke(app, ["candidates", "--include-expired", "--json"])
        after.append(sorted(json.loads(listed.stdout), key=lambda c: (c["customer_id"], c["not_before"])))
    return after


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    return tmp_path


def test_windowed_count(root: Path) -> None:
    [found] = _run(root, "app_crashes")
    assert [(c["customer_id"], c["created_at"][:16], c["payload"]) for c in found] == [
        ("C1", "2026-11-25T09:30", {"crashes_24h": 4, "app_version": "4.2"})]


def test_sequence_with_capture(root: Path) -> None:
    [found] = _run(root, "takeover")
    assert [(c["customer_id"], c["payload"]) for c in found] == [("C2", {"to_phone": "+15550100"})]


def test_absence_timer(root: Path) -> None:
    [found] = _run(root, "no_purchase")
    assert [(c["customer_id"], c["created_at"][:16], c["payload"]) for c in found] == [
        ("C3", "2026-11-25T10:00", {"cart_value": 80.0})]


def test_fan_out(root: Path) -> None:
    [found] = _run(root, "back_in_stock")
    assert [(c["customer_id"], c["payload"]["lookup_added_at"]) for c in found] == [
        ("A", "2026-11-01"), ("B", "2026-11-10")]


def test_escalation_and_cancellation(root: Path) -> None:
    started, completed = _run(root, "kyc_chase")
    assert [(c["channels"], c["not_before"][:16], c["dedup_key"][-3:], c["status"]) for c in started] == [
        (["inapp"], "2026-11-25T10:00", "000", "pending"),
        (["email"], "2026-11-26T10:00", ":e1", "pending"),
        (["sms"], "2026-11-28T10:00", ":e2", "pending")]
    assert {(c["status"], c["status_reason"]) for c in completed} == {
        ("cancelled", "cancelled by kyc_completed event y2")}
