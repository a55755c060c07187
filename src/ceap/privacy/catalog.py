"""Where a customer's data lives in the store: every table, and how its rows are found.

A test checks that every table the store creates is listed here, so a new table
cannot be forgotten by ``ceap customer export`` and ``ceap customer delete``."""

from __future__ import annotations

import re
from typing import Any

#: tables with the customer's id in a column
BY_CUSTOMER = {
    "candidates": "customer_id", "deliveries": "customer_id", "profiles": "customer_id",
    "consent": "customer_id", "consent_history": "customer_id", "event_log": "customer_id",
    "timers": "customer_id", "inbox": "customer_id", "engagements": "customer_id",
    "goal_events": "customer_id", "conversions": "customer_id", "digest_items": "customer_id",
    "journey_entries": "customer_id", "journey_log": "customer_id",
}
#: tables found through the customer's candidates or deliveries
BY_CANDIDATE = {"learned_outcomes": "candidate_id"}
BY_DELIVERY = {"delivery_events": "delivery_id"}
#: tables whose rows hold raw text: found by the customer's id, e-mail or phone inside it
SCANNED = {"quarantine": "row", "stream_queue": "body", "tracked_links": "url"}
#: suppressions hold the customer's addresses (normalized)
ADDRESSED = {"suppressions": "address"}
#: the audit log names customers in ``target`` (``customer:<id>``): rewritten to the tombstone
REWRITTEN = {"audit_log": "target"}
#: tables that hold no customer data (a deletion still scans their text for the id)
NO_CUSTOMER = {"runs", "bandit_arms", "export_cursors", "api_keys", "schedule_state", "rate_limits",
               "alembic_version", "worker_status", "partition_claims",
               "schedule_log", "scheduler_lease", "deletion_log"}


def listed() -> set[str]:
    return {*BY_CUSTOMER, *BY_CANDIDATE, *BY_DELIVERY, *SCANNED, *ADDRESSED, *REWRITTEN, *NO_CUSTOMER}


def store_tables(tx: Any) -> dict[str, list[tuple[str, str]]]:
    """Every table of the store with its ``(column, type)`` pairs."""
    if tx.dialect == "sqlite":
        names = [r[0] for r in tx.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite_%'").fetchall()]
        return {n: [(r[1], str(r[2]).lower()) for r in tx.execute(f'PRAGMA table_info("{n}")').fetchall()]
                for n in names}
    rows = tx.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                      "WHERE table_schema = current_schema() "
                      "ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        out.setdefault(table, []).append((column, str(kind).lower()))
    return out


def text_columns(columns: list[tuple[str, str]]) -> list[str]:
    """Columns that can hold text: TEXT, JSON, JSONB, VARCHAR."""
    return [c for c, kind in columns if any(k in kind for k in ("text", "json", "char"))]


def needle_pattern(needles: set[str]) -> re.Pattern[str]:
    """Whole-word occurrences of any needle, case-insensitive (``C42`` is not in ``C420``)."""
    alternatives = "|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
    return re.compile(rf"(?<![\w@.+-])(?:{alternatives})(?![\w@-])", re.IGNORECASE)


def like_any(tx: Any, column: str, needles: set[str]) -> tuple[str, list[str]]:
    """A ``WHERE`` part that keeps rows whose ``column`` contains a needle (a pre-filter:
    the pattern decides). JSON columns are read as text."""
    text = f"CAST({column} AS TEXT)" if tx.dialect == "postgres" else column
    parts = [f"lower({text}) LIKE ? ESCAPE '\\'" for _ in needles]
    params = ["%" + n.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
              for n in sorted(needles)]
    return "(" + " OR ".join(parts) + ")", params
