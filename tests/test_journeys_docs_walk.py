"""What a new user following docs/journeys.md and docs/digests.md ran into, each held to
what the docs now say: the digest example keeps every comment, and ``ceap scheduler
--once --now`` in the future (the docs' way to see a wait's timeout or a digest come due)
does not leave the other schedulers standing by until that time."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ceap.journeys.plot import render
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker
from ceap.runtime.scheduler import Scheduler
from ceap.spec import load_program
from ceap.spec.schedule import SchedulerConfig
from ceap.store import Store
from ceap.testing import FakeClock

DOCS = Path(__file__).resolve().parent.parent / "docs"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def yaml_block(doc: str, first_line: str) -> str:
    """The ```yaml block of ``doc`` whose first line is ``first_line``."""
    for block in re.findall(r"```yaml\n(.*?)```", (DOCS / doc).read_text(), re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"no yaml block starting {first_line!r} in {doc}")


def test_the_digest_example_holds_every_comment_of_a_customer(tmp_path: Path, store: Store) -> None:
    """digests.md: "every comment is a candidate, not only the best one" -- with the
    example as written (it once left out subject_id, and 3 comments made 1 candidate)."""
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "comments.yaml").write_text(yaml_block("digests.md", "# programs/comments.yaml"))
    spec = load_program(tmp_path / "programs" / "comments.yaml")
    assert spec.action.digest is not None and spec.source.type == "events"
    events = [{"id": f"e{i}", "customer_id": "alice", "type": "comment_posted",
               "ts": (T0 + timedelta(minutes=i)).isoformat(),
               "attributes": {"comment_id": f"k{i}", "author": f"user{i}", "text": f"comment {i}"}}
              for i in range(3)]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    context = PluginContext(base_dir=tmp_path, store=store)
    source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
    worker = Worker(store, source, tmp_path / "programs", context, reload_every=0,
                    clock=FakeClock(T0 + timedelta(minutes=5)), journeys=None)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    held = store.candidates(CandidateQuery(program="comments", limit=10, include_expired=True))
    assert sorted((c.status, c.payload["author"]) for c in held) == [
        ("digest", "user0"), ("digest", "user1"), ("digest", "user2")]


def test_the_journey_docs_example_plots_as_documented(tmp_path: Path) -> None:
    """journeys.md: the trial_nudge program and its `--plot --format text` output."""
    program = yaml_block("journeys.md", "name: trial_nudge")
    (tmp_path / "trial_nudge.yaml").write_text(program)
    spec = load_program(tmp_path / "trial_nudge.yaml")
    text = (DOCS / "journeys.md").read_text()
    shown = text.split("$ ceap journey trial_nudge --plot --format text\n", 1)[1].split("```", 1)[0]
    assert render(spec.journey, "text", spec.action) == shown


def _scheduler(store: Store, tmp_path: Path, holder: str, clock: Any) -> Scheduler:
    return Scheduler(store, PluginContext(base_dir=tmp_path, store=store), list,
                     config=SchedulerConfig(dispatch=False), clock=clock, holder=holder)


def test_scheduler_once_with_a_clock_ahead_gives_its_lease_up(tmp_path: Path, store: Store) -> None:
    """`ceap scheduler --once --now <a day ahead>` (journeys.md, digests.md trials): once it
    is done, a scheduler on today's clock is active at once, not a day later."""
    ahead = _scheduler(store, tmp_path, "ahead", FakeClock(T0 + timedelta(days=1)))
    ahead.run(once=True, heartbeat=False)
    now = _scheduler(store, tmp_path, "now", FakeClock(T0))
    assert now.tick().leader


def test_scheduler_prints_the_journey_tick_before_the_dispatch_it_feeds(tmp_path: Path) -> None:
    """journeys.md: the scheduler ticks "before its dispatcher pass, so the messages a tick
    writes go out in the same tick"; its lines come in that order too (they were printed
    dispatch first, as if the pass had run before the tick)."""
    from typer.testing import CliRunner

    from ceap.cli import app
    from ceap.model import RunRecord
    from ceap.store import open_store
    from ceap.testing import make_candidates

    (tmp_path / "programs").mkdir()
    program = {"name": "series", "source": {"type": "csv", "path": "x.csv"},
               "action": {"type": "inform", "channels": ["email"]},
               "journey": {"steps": [{"id": "hello", "send": {}},
                                     {"id": "pause", "wait_for": {"within": "1d"}}]}}
    (tmp_path / "programs" / "series.yaml").write_text(json.dumps(program))
    url = f"sqlite:///{tmp_path / 'ceap.db'}"
    at = datetime.now(UTC).replace(microsecond=0)
    store = open_store(url)
    store.write_run(RunRecord("r1", "default", "series", "succeeded", at),
                    make_candidates(1, now=at, program="series", status="journey", payload={},
                                    dedup_key=lambda i: f"ticket-{i}"))
    store.close()
    done = CliRunner().invoke(app, ["--project", str(tmp_path), "--store", url, "scheduler", "--once",
                                    "--now", (at + timedelta(minutes=1)).isoformat()])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")]
    journeys = [i for i, e in enumerate(lines) if e.startswith("journeys: entered 1")]
    dispatch = [i for i, e in enumerate(lines) if e.startswith("dispatch: ")]
    assert journeys and dispatch and journeys[0] < dispatch[0], lines


def test_a_branch_reads_context_columns_not_the_sources_other_columns(tmp_path: Path, store: Store) -> None:
    """journeys.md, branch.if: "The source's other columns are not there: list the ones a
    branch reads in source.context"; without it the entries exit with the branch's error."""
    from ceap.journeys.engine import tick
    from ceap.journeys.state import customer_entries
    from ceap.runtime import run_program
    from ceap.spec import parse_program

    (tmp_path / "trials.csv").write_text("customer_id,plan\nc1,pro\nc2,free\n")
    steps = [{"id": "welcome", "send": {}}, {"id": "pause1", "wait_for": {"within": "1d"}},
             {"id": "is_pro", "branch": {"if": "plan = 'pro'", "then": "tips", "else": "end"}},
             {"id": "tips", "send": {}}]
    context = PluginContext(base_dir=tmp_path, store=store)
    outcome: dict[str, dict[str, tuple[str, str, str | None]]] = {}
    for name, source in (("listed", {"context": ["plan"]}), ("unlisted", {})):
        spec = parse_program({"name": name,
                              "source": {"type": "csv", "path": str(tmp_path / "trials.csv"), **source},
                              "action": {"type": "inform", "channels": ["inapp"]},
                              "journey": {"steps": steps}})
        run_program(spec, store, context, now=T0)
        tick(store, [spec], now=T0)
        tick(store, [spec], now=T0 + timedelta(days=1, seconds=1))
        with store.tx() as tx:
            outcome[name] = {c: (e.status, e.step, e.reason) for c in ("c1", "c2")
                             for e in customer_entries(tx, "default", c, name)}
    assert {c: got[:2] for c, got in outcome["listed"].items()} == {"c1": ("completed", "tips"),
                                                                    "c2": ("completed", "is_pro")}
    for status, step, reason in outcome["unlisted"].values():
        assert (status, step) == ("exited", "is_pro")
        assert reason is not None and reason.startswith("branch is_pro: ") and '"plan"' in reason
