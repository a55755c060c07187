"""Building the API of ``ceap serve`` in a server process: the same in one process and in
each of ``--workers N`` (uvicorn starts them from ``app_from_env``, an import string)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

#: ``ceap serve``'s settings, handed to its worker processes
SETTINGS_ENV = "CEAP_SERVE_SETTINGS"


def build_api(project: Any, store: Any, tenant: str | None, auth: bool) -> FastAPI:
    """The API of ``project`` over ``store``."""
    from ceap.api.app import create_app
    from ceap.realtime.setup import open_stream

    ingest = open_stream(project, project.ingest, store) if project.ingest else None
    api = create_app(store, auth=auth, ingest=ingest, default_tenant=tenant or project.tenant,
                     programs=project.programs_dir(), default_tz=project.scheduler.timezone)
    api.state.tracking = project.tracking  # the tracking endpoints' consent rule and scanner window
    return api


def app_from_env() -> FastAPI:
    """uvicorn's factory for a worker process of ``ceap serve --workers N``."""
    from ceap.observability.logs import setup_logging
    from ceap.observability.tracing import setup_tracing
    from ceap.spec import load_project
    from ceap.store import open_store

    setup_logging()
    setup_tracing("ceap-api")
    settings = json.loads(os.environ[SETTINGS_ENV])
    project = load_project(Path(settings["project"]))
    store = open_store(project.store_url(settings["store"]), context=project.context(settings["tenant"]),
                       candidates=project.candidate_store)
    return build_api(project, store, settings["tenant"], settings["auth"])


def settings_env(project_dir: str | None, store_url: str | None, tenant: str | None,
                 auth: bool) -> str:
    return json.dumps({"project": project_dir, "store": store_url, "tenant": tenant, "auth": auth})
