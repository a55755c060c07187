"""Serving the metrics: ``GET /metrics`` of ``ceap serve`` and ``--metrics-port`` of the
long-running commands.

With ``PROMETHEUS_MULTIPROC_DIR`` set, each process writes its values to files in
that folder and a scrape reads every process's files (prometheus_client's
multiprocess mode): the answer of any one ``ceap serve --workers N`` process covers
all of them. The folder must exist, be empty when the server starts (``ceap
serve`` empties it) and belong to one server.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process's."""
    folder = multiprocess_dir()
    if folder is None:
        return REGISTRY
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=folder)
    return merged


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def clear_multiprocess_dir() -> None:
    """Remove the previous server's value files (a restart must not add old counts)."""
    folder = multiprocess_dir()
    if folder is None:
        return
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{MULTIPROC_ENV}={folder}: not a folder (create it first)")
    for item in path.glob("*.db"):
        item.unlink()


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a background thread (``--metrics-port``)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=registry())


__all__ = ["CONTENT_TYPE_LATEST", "clear_multiprocess_dir", "registry", "render", "serve_metrics"]
