"""An index of the candidates a dispatcher may claim, in claim order (priority, score,
id; only ``pending`` and ``shadow`` ones): a claim reads its first entries instead of
sorting every unexpired candidate (bench/README.md, issue 11).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

from ceap.store.migrations import no_downgrade

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: the same statement on SQLite and PostgreSQL (frozen: not read from the schema modules)
STATEMENTS = [
    "CREATE INDEX IF NOT EXISTS candidates_due ON candidates (priority DESC, score DESC, id) "
    "WHERE (status = 'pending' OR status = 'shadow')",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


downgrade = no_downgrade
