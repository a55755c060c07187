"""What reading an API key from the store costs (once per key, server process and
``CEAP_API_KEY_CACHE_SECONDS``, docs/api.md#api-keys; on every request before that cache):
the per-request lookup, side by side with a dictionary hit (what a cache would cost), on
SQLite and, when reachable, PostgreSQL. Prints microseconds per request and the ratio."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from ceap.api.auth import _hash, create_key, lookup
from ceap.store import open_store


def per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def pg_schema(base: str) -> tuple[str, Callable[[], None]]:
    """A fresh schema of ``base`` (dropped afterwards), as the tests use."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return f"{base}?options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--pg", default=os.environ.get("CEAP_TEST_PG",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgresql"):
            drop: Callable[[], None] = lambda: None  # noqa: E731
            try:
                url = f"sqlite:///{tmp}/bench.db" if kind == "sqlite" else ""
                if not url:
                    url, drop = pg_schema(args.pg)
                store = open_store(url)
            except Exception as exc:  # PostgreSQL not reachable
                print(f"{kind}: skipped ({type(exc).__name__})")
                continue
            key = create_key(store, "bench", "bench")
            cache = {_hash(key): "bench"}
            stored = per_call(lambda s=store, k=key: lookup(s, k), args.n)  # type: ignore[misc]
            cached = per_call(lambda c=cache, k=key: c.get(_hash(k)), args.n)  # type: ignore[misc]
            print(f"{kind:10s} lookup {stored:8.1f} us/request   dict hit {cached:6.2f} us/request"
                  f"   ratio {stored / cached:6.1f}x")
            store.close()
            drop()


if __name__ == "__main__":
    main()
