"""Alembic's environment for CEAP's store: run by ``ceap.store.migrations``, which hands
over an open connection (online) or a dialect name (``--sql``, offline)."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    context.configure(dialect_name=config.attributes["dialect"], as_sql=True, literal_binds=True,
                      transactional_ddl=False)
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=connection, transactional_ddl=connection.dialect.name == "postgresql")
    with context.begin_transaction():
        context.run_migrations()
