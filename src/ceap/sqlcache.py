"""The SQL expressions DuckDB has already parsed, remembered between runs.

Every SQL expression of a program (features, filters, expression scorers, source columns)
is parsed by DuckDB when the program is validated. Importing DuckDB and starting its
parser costs about 0.04 s of CPU, a seventh of ``ceap validate``. An expression
that parsed once parses again under the same DuckDB version, so a digest of each one that
parsed is kept in a file per DuckDB version; expressions that fail are never kept (they
are parsed again, and the message comes from DuckDB).

The folder is ``CEAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/ceap``, else ``~/.cache/ceap``;
``CEAP_CACHE_DIR`` set to an empty value keeps nothing. A folder that cannot be read or
written is skipped: every expression is then parsed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: bump when ``ceap.sqlexpr.check_expression`` changes what it accepts
FORMAT = 1
#: a file past this many digests is started again
MAX_ENTRIES = 20_000


def cache_dir() -> Path | None:
    """Where ceap keeps what it may forget (None: keep nothing)."""
    configured = os.environ.get("CEAP_CACHE_DIR")
    if configured is not None:
        return Path(configured).expanduser() if configured.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ceap"


def _digest(expr: str) -> str:
    return hashlib.sha256(expr.encode()).hexdigest()[:32]


class ParsedExpressions:
    """The digests of the expressions that parsed, read from ``path`` (None: in memory)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._seen: set[str] = set()
        if path is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):  # unreadable: start empty
                self._seen = set(path.read_text(encoding="ascii").split())

    def __contains__(self, expr: str) -> bool:
        return _digest(expr) in self._seen

    def add(self, expr: str) -> None:
        """Remember that ``expr`` parsed (appended: concurrent runs may write alike)."""
        digest = _digest(expr)
        if digest in self._seen:
            return
        self._seen.add(digest)
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = "w" if len(self._seen) > MAX_ENTRIES else "a"
            if mode == "w":
                self._seen = {digest}
            with self.path.open(mode, encoding="ascii") as f:
                f.write(digest + "\n")
        except OSError:
            self.path = None  # not writable: remember in memory only


@lru_cache(maxsize=1)
def parsed_expressions() -> ParsedExpressions:
    """The expressions known to parse under the installed DuckDB (read once per process)."""
    folder = cache_dir()
    try:
        duckdb_version = version("duckdb")  # the installed one, without importing it
    except PackageNotFoundError:
        folder = None
    if folder is None:
        return ParsedExpressions(None)
    return ParsedExpressions(folder / f"sql-parsed-v{FORMAT}-duckdb-{duckdb_version}.txt")
