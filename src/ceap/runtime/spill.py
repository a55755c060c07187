"""Where a batch run keeps its scored rows: an in-memory DuckDB database that spills.

Rows that pass the filters and the threshold are appended batch by batch; the
selection (one per customer, top-k) runs as DuckDB queries over them, and DuckDB
moves data to its temporary folder past ``memory_limit``. So a run's memory is
bounded by the batch size, the limit and the candidates it selects, not by the
rows it reads. (An in-memory database keeps no write-ahead log; it spills to
the same temporary folder a database file would.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

TABLE = "scored"


@dataclass(frozen=True)
class LocalSettings:
    """The single-process engine's limits (``ceap.yaml`` ``batch:``)."""

    memory_limit: str = "1GB"
    spill_dir: str | None = None
    threads: int | None = None


class SpilledRows:
    """An append-only table of scored rows that may live on disk."""

    def __init__(self, settings: LocalSettings | None = None):
        settings = settings or LocalSettings()
        parent = settings.spill_dir or os.environ.get("CEAP_SPILL_DIR") or None
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="ceap-run-", dir=parent))
        config: dict[str, Any] = {
            "memory_limit": settings.memory_limit,
            "temp_directory": str(self.folder / "tmp"),
            "preserve_insertion_order": False,
        }
        if settings.threads:
            config["threads"] = settings.threads
        self.con = duckdb.connect(":memory:", config=config)
        self.con.execute("SET TimeZone = 'UTC'")
        self.rows = 0
        self.created = False

    @property
    def name(self) -> str:
        return TABLE

    def append(self, table: pa.Table) -> None:
        self.con.register("__ceap_incoming", table)
        try:
            if not self.created:
                self.con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM __ceap_incoming")
                self.created = True
            else:
                self.con.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM __ceap_incoming")
        finally:
            self.con.unregister("__ceap_incoming")
        self.rows += table.num_rows

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
