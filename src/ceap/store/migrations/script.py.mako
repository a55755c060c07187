"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from __future__ import annotations

from alembic import context, op

from ceap.store.migrations import add_columns  # noqa: F401 - for new columns

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = context.get_context().dialect.name  # "sqlite" or "postgresql"
    for statement in STATEMENTS[dialect]:  # CREATE TABLE / INDEX IF NOT EXISTS ...
        op.execute(statement)
    # new columns of an existing table, added only where missing:
    # add_columns("timers", {"sqlite": [("partition_key", "TEXT")],
    #                        "postgresql": [("partition_key", "TEXT")]})


def downgrade() -> None:
    raise NotImplementedError("restore a backup instead")


STATEMENTS = {
    "sqlite": [
    ],
    "postgresql": [
    ],
}
