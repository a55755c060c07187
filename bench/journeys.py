"""Journey tick benchmark: how fast ``ceap journeys tick`` enters and moves customers.

Measures, in one process and one run, side by side on the same store kind:

* **baseline**: ``Store.write_run`` of N candidates in one transaction (what a run pays to
  write N messages; the floor for writing N journey messages);
* **enter + send**: one tick over N tickets (status ``journey``): N entries, N first-step
  messages, each entry's move in its own conditional update (chunks of 200 per transaction);
* **idle**: a tick where all N entries wait (nothing to move): the cost of reading them and
  their events;
* **timeout + send**: a tick after the wait's window, where all N time out and get their
  second message.

Each store kind runs twice in the run: the moves written **per entry** (a conditional
``UPDATE``, an ``INSERT`` per message and per log row: how the tick wrote them before) and
**batched** per chunk of 200 (what ``advance`` does now: ``write_walks``).

Usage (from the repository root)::

    .venv/bin/python bench/journeys.py                      # 20,000 entries, SQLite
    .venv/bin/python bench/journeys.py --entries 5000 --stores sqlite,postgres
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pyarrow as pa  # noqa: E402

from ceap.journeys import engine  # noqa: E402
from ceap.journeys.engine import tick, write_walk  # noqa: E402
from ceap.model import RunRecord  # noqa: E402
from ceap.spec import parse_program  # noqa: E402
from ceap.store import open_store  # noqa: E402
from ceap.testing import make_candidates  # noqa: E402

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PROGRAM = {"name": "series", "source": {"type": "csv", "path": "x.csv"},
           "action": {"type": "inform", "channels": ["inapp"]},
           "journey": {"exit_on": ["purchase"], "steps": [
               {"id": "first", "send": {}},
               {"id": "wait", "wait_for": {"events": {"clicked": "end"}, "within": "1d"}},
               {"id": "second", "send": {}}]}}


PG = os.environ.get("CEAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMAS: list[str] = []


def _store(kind: str, folder: Path):  # type: ignore[no-untyped-def]
    if kind == "sqlite":
        return open_store(f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}")
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    SCHEMAS.append(schema)
    return open_store(f"{PG}?options=-csearch_path%3D{schema}")


def _drop_schemas() -> None:
    if SCHEMAS:
        import psycopg

        with psycopg.connect(PG, autocommit=True) as conn:
            for schema in SCHEMAS:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def per_entry(tx, spec, chunk, now):  # type: ignore[no-untyped-def]
    """The tick's writes before batching: each entry's move on its own statements."""
    return {e.id for e, w in chunk if write_walk(tx, spec, e, w, now)}


def run(kind: str, n: int, folder: Path, batched: bool = True) -> dict[str, float]:
    spec = parse_program(PROGRAM)
    rows = make_candidates(n, now=T0, program="series", channels=["inapp"], payload={},
                           dedup_key=lambda i: f"k{i}")
    base = _store(kind, folder)
    started = time.perf_counter()
    base.write_run(RunRecord("b", "default", "series", "succeeded", T0), rows)
    baseline = time.perf_counter() - started
    base.close()
    store = _store(kind, folder)
    store.write_run(RunRecord("r", "default", "series", "succeeded", T0),
                    rows.set_column(rows.schema.get_field_index("status"), "status",
                                    pa.array(["journey"] * n)))
    out = {"baseline_write_run": baseline}
    real = engine.write_walks
    engine.write_walks = real if batched else per_entry  # type: ignore[assignment]
    try:
        for name, at in (("enter_and_send", T0), ("idle", T0 + timedelta(hours=1)),
                         ("timeout_and_send", T0 + timedelta(days=1, seconds=1))):
            started = time.perf_counter()
            stats = tick(store, [spec], now=at)
            out[name] = time.perf_counter() - started
            out[f"{name}_messages"] = stats.messages
    finally:
        engine.write_walks = real  # type: ignore[assignment]
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--stores", default="sqlite")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _main(args, Path(tmp))
        finally:
            _drop_schemas()


def _main(args: argparse.Namespace, tmp: Path) -> None:
    for kind in args.stores.split(","):
        for batched in (False, True):
            _report(kind, batched, args.entries, run(kind, args.entries, tmp, batched))


def _report(kind: str, batched: bool, n: int, found: dict[str, float]) -> None:
    base = found["baseline_write_run"]
    print(f"{kind}, writes {'batched' if batched else 'per entry'}: {n:,} entries")
    print(f"  baseline write_run of {n:,} candidates: {base:.2f} s ({n / base:,.0f}/s)")
    for name in ("enter_and_send", "idle", "timeout_and_send"):
        s = found[name]
        print(f"  {name}: {s:.2f} s ({n / s:,.0f} entries/s, {int(found[f'{name}_messages']):,} "
              f"messages; {s / base:.1f}x the baseline)", flush=True)

if __name__ == "__main__":
    main()
