"""Running the API: one uvicorn process, or several worker processes sharing the store.

With ``workers > 1`` uvicorn's supervisor starts that many processes on one listening
socket; each builds its own app through ``worker_app`` (its own store connections, its
own read pool) from the settings the parent puts in the
environment. The parent migrates the store once before they start.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

#: the parent's settings for its workers (JSON of ``ServeSettings``)
SETTINGS_ENV = "CEAP_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """What a worker needs to build the same app as the parent."""

    project_dir: str | None
    store: str | None
    tenant: str | None
    auth: bool


def build_app(settings: ServeSettings, migrate: bool = True) -> FastAPI:
    """The API over the project's store, with its ingest stream and tracking settings.
    The store is closed when the app shuts down."""
    from ceap.api import create_app
    from ceap.realtime.setup import open_stream
    from ceap.spec import load_project
    from ceap.store import open_store

    project = load_project(Path(settings.project_dir) if settings.project_dir else None)
    store = open_store(project.store_url(settings.store), migrate=migrate,
                       context=project.context(settings.tenant), candidates=project.candidate_store)
    try:
        ingest = (open_stream(project, project.ingest, store, named_by="ingest")
                  if project.ingest else None)
        api = create_app(store, auth=settings.auth, ingest=ingest,
                         default_tenant=settings.tenant or project.tenant,
                         programs=project.programs_dir(), default_tz=project.scheduler.timezone)
    except BaseException:
        store.close()
        raise
    api.state.tracking = project.tracking  # the tracking endpoints' consent rule and scanner window
    api.state.state_url = project.state  # a customer's deletion also clears their Redis state
    api.router.on_shutdown.append(store.close)
    return api


#: the young generation's threshold in a server process (Python's default: 700)
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Set a server process's garbage collector for serving, once it has started.

    Its start-up heap (libraries, the app, its routes and models) is frozen
    (``gc.freeze``): full collections no longer walk it (main's workers paused up to
    67 ms of CPU for each, every few seconds at 2,000 req/s). The young generation is
    collected after 10,000 new objects rather than 700: requests in flight made a young
    collection every few dozen requests, and promoted what they held at that moment
    towards the full collections (bench/README.md, issue 11). Objects are still freed by
    reference counting as soon as they are dropped; only cycles wait for a collection."""
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])


def _serving(api: FastAPI) -> FastAPI:
    """``api`` as a server process runs it: its heap settled once it has started."""
    api.router.on_startup.append(settle_heap)
    return api


def _migrate(settings: ServeSettings) -> None:
    from ceap.spec import load_project
    from ceap.store import open_store

    project = load_project(Path(settings.project_dir) if settings.project_dir else None)
    open_store(project.store_url(settings.store), context=project.context(settings.tenant),
               candidates=project.candidate_store).close()


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn's ``factory``), from ``CEAP_SERVE_SETTINGS``."""
    from ceap.observability.logs import setup_logging
    from ceap.observability.tracing import setup_tracing

    setup_logging()
    setup_tracing("ceap-api")
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{SETTINGS_ENV} is not set: start workers with `ceap serve --workers N`")
    return _serving(build_app(ServeSettings(**json.loads(raw)), migrate=False))


def run(settings: ServeSettings, *, host: str, port: int, workers: int = 1, migrate: bool = True,
        **uvicorn_options: Any) -> None:
    """Serve until stopped: in this process, or in ``workers`` processes (the store is
    migrated first, once, unless ``migrate`` is false)."""
    import uvicorn

    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning", **uvicorn_options}
    if workers <= 1:
        uvicorn.run(_serving(build_app(settings, migrate=migrate)), **options)
        return
    if migrate:
        _migrate(settings)  # once, before the workers start
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    from ceap.observability.logs import resolve_format

    os.environ.setdefault("CEAP_LOG_FORMAT", resolve_format())  # the workers log as the parent
    uvicorn.run("ceap.api.server:worker_app", factory=True, workers=workers, **options)
