"""OpenTelemetry spans (the otel extra), read from the SDK's in-memory exporter: a batch
run's stages, a dispatch pass and its provider calls, API requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.delivery.dispatcher import Dispatcher
from ceap.plugin import PluginContext
from ceap.runtime.batch import run_program
from ceap.spec import parse_program
from ceap.store import Store
from ceap.testing import FakeClock
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv
from tests.test_dispatcher import T0, FlakyChannel, FlakyConfig, seed

pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install 'ceap[otel]'")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the process's first: set once, kept
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_ceap_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._ceap_test_exporter = True  # type: ignore[attr-defined]
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_batch_run_is_a_span_with_a_child_per_stage(spans: InMemorySpanExporter, store: Store,
                                                      tmp_path: Path) -> None:
    write_csv(tmp_path / "orders.csv", ORDERS_HEADER, ORDERS)
    result = run_program(parse_program(base_program(), "big_carts.yaml"), store,
                         PluginContext(base_dir=tmp_path), now=T0)
    found = by_name(spans)
    run = found["ceap.run"]
    assert run.attributes["ceap.program"] == "big_carts"
    assert run.attributes["ceap.run_id"] == result.run.run_id
    assert run.attributes["ceap.status"] == "succeeded"
    assert run.attributes["ceap.rows.written"] == result.funnel.written
    for stage in ("ceap.run.plan", "ceap.run.process", "ceap.run.candidates", "ceap.run.write"):
        assert found[stage].parent.span_id == run.context.span_id, stage
        assert found[stage].context.trace_id == run.context.trace_id


def test_a_dispatch_pass_and_its_provider_calls(spans: InMemorySpanExporter, store: Store) -> None:
    seed(store, 3)
    Dispatcher(store, {"email": FlakyChannel(FlakyConfig())}, clock=FakeClock(T0)).step()
    finished = spans.get_finished_spans()
    send = next(s for s in finished if s.name == "ceap.dispatch.send")
    calls = [s for s in finished if s.name == "ceap.provider.send"]
    assert any(s.name == "ceap.dispatch.plan" and s.attributes["ceap.claimed"] == 3 for s in finished)
    assert send.attributes["ceap.sent"] == 3
    assert calls and all(c.parent.span_id == send.context.span_id for c in calls)
    assert sum(c.attributes["ceap.messages"] for c in calls) == 3
    assert {c.attributes["ceap.channel"] for c in calls} == {"email"}
    text = repr([dict(s.attributes) for s in finished])
    assert "c0" not in text and "example.com" not in text  # no customer, no address


def test_api_requests_are_server_spans_named_by_route(spans: InMemorySpanExporter, store: Store) -> None:
    api = TestClient(create_app(store, auth=False))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    api.get("/v1/customers/cust-9/inbox", headers={"traceparent": parent})
    span = by_name(spans)["GET /v1/customers/{customer_id}/inbox"]
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes["http.route"] == "/v1/customers/{customer_id}/inbox"
    assert span.attributes["http.response.status_code"] == 200
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # continued
    assert "cust-9" not in repr(dict(span.attributes))


def test_setup_tracing_is_off_by_default_and_names_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from ceap.observability.tracing import setup_tracing

    monkeypatch.delenv("CEAP_TRACES", raising=False)
    assert setup_tracing("ceap") is False
    monkeypatch.setenv("CEAP_TRACES", "zipkin")
    with pytest.raises(ValueError, match="CEAP_TRACES='zipkin'"):
        setup_tracing("ceap")
