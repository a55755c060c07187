"""A server process sets its garbage collector for serving once it has started
(``ceap.api.server.settle_heap``): the start-up heap frozen, young collections rarer."""

from __future__ import annotations

import gc

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ceap.api.server import GC_YOUNG_THRESHOLD, _serving


def test_a_started_server_freezes_its_heap_and_collects_the_young_less_often() -> None:
    threshold = gc.get_threshold()
    app = _serving(FastAPI())
    assert gc.get_freeze_count() == 0 and threshold[0] < GC_YOUNG_THRESHOLD  # not at import
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
            assert client.get("/nothing").status_code == 404  # and it serves
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
