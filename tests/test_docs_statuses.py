"""The status lists of docs/cli.md and docs/delivery.md name every status the code sets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from ceap.delivery.model import DeliveryStatus
from ceap.model import CandidateStatus

DOCS = Path(__file__).resolve().parent.parent / "docs"
SRC = Path(__file__).resolve().parent.parent / "src" / "ceap"


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def option_row(command: str) -> str:
    """The ``--status STATUS`` row of ``ceap COMMAND`` in docs/cli.md."""
    text = (DOCS / "cli.md").read_text()
    part = section(text, f"## `ceap {command}`", "\n## ")
    [row] = [line for line in part.splitlines() if line.startswith("| `--status STATUS`")]
    return row


def status_table(kind: str) -> set[str]:
    """The statuses in the first column of the table after "A **kind**:" in docs/delivery.md."""
    text = (DOCS / "delivery.md").read_text()
    table = text[text.index(f"A **{kind}**:"):].split("\n\n")[1]
    return {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}


def written(table: str) -> set[str]:
    """Statuses the code sets with ``UPDATE <table> SET status = '...'``."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        found.update(re.findall(rf"UPDATE {table} SET status = '([a-z_]+)'", path.read_text()))
    return found


def test_statuses_the_code_writes_are_all_declared() -> None:
    assert written("candidates") and written("candidates") <= set(get_args(CandidateStatus))
    assert written("deliveries") and written("deliveries") <= set(get_args(DeliveryStatus))


@pytest.mark.parametrize("status", get_args(CandidateStatus))
def test_every_candidate_status_is_documented(status: str) -> None:
    assert f"`{status}`" in option_row("candidates")
    assert status in status_table("candidate")


@pytest.mark.parametrize("status", sorted(written("deliveries") | {
    "queued", "sending", "sent", "delivered", "bounced", "failed", "complained", "dead", "suppressed",
    "ambiguous", "shadow"}))
def test_every_delivery_status_set_is_documented(status: str) -> None:
    assert f"`{status}`" in option_row("deliveries")
    assert status in status_table("delivery")
