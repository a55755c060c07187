"""The event log without its customer index on SQLite: ``event_log_by_customer`` is
dropped there and kept on PostgreSQL. A SQLite store serves one host, whose worker keeps
its customers' history in memory (the keyed state) and answers the absence timers'
``missing`` look-up from it; each entry of that index, inserted at a random place, cost
the worker's append 2-3 µs an event (bench/README.md, issue 10). The reads that still
look a customer up in the log on SQLite (privacy export and erase) scan it; it is pruned to
the longest window. A worker that finds another reading its stream creates the index again
(``ceap.realtime.state.index_by_customer``). PostgreSQL, the store of several workers,
keeps the index.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from ceap.store.migrations import execute_for_dialect, no_downgrade

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: frozen: not read from the schema modules
STATEMENTS = {"sqlite": ["DROP INDEX IF EXISTS event_log_by_customer"], "postgresql": []}


def upgrade() -> None:
    execute_for_dialect(STATEMENTS)


downgrade = no_downgrade
