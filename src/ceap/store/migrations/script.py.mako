"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from __future__ import annotations

from alembic import context, op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = context.get_context().dialect.name  # "sqlite" or "postgresql"
    for statement in STATEMENTS[dialect]:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("restore a backup instead")


STATEMENTS = {
    "sqlite": [
    ],
    "postgresql": [
    ],
}
