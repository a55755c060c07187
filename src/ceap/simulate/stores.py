"""Throw-away stores for simulations: a SQLite file in a folder, or a fresh PostgreSQL
schema (created, then dropped with everything in it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote


@contextmanager
def scratch_store(folder: Path, postgres: str | None = None) -> Iterator[str]:
    """A store URL for one simulation: ``sqlite:///<folder>/ceap.db``, or with ``postgres``
    (a server URL) a new schema on it, dropped on exit."""
    if postgres is None:
        yield f"sqlite:///{Path(folder) / 'ceap.db'}"
        return
    import psycopg

    schema = f"sim_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in postgres else "?"
    try:
        yield f"{postgres}{joiner}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


__all__ = ["scratch_store"]
