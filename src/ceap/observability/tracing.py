"""Optional OpenTelemetry traces (``pip install 'ceap[otel]'``); off by default.

``span(name, **attributes)`` opens a span when the OpenTelemetry API is installed and
does nothing otherwise. Spans are only recorded once a tracer provider is set:
``CEAP_TRACES=otlp`` (OTLP over HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables) or ``CEAP_TRACES=console`` (spans printed to standard error) makes
``setup_tracing`` install one; a provider set up by the application itself (or by
``opentelemetry-instrument``) is used as it is. Span attributes never hold
personal data: programs, channels, run ids, counts, route templates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

TRACES_ENV = "CEAP_TRACES"
_TRACER: Any = None
_TRACE: Any = None  # the ``opentelemetry.trace`` module, once imported
_CHECKED = False


def _tracer() -> Any:
    global _TRACER, _TRACE, _CHECKED
    if not _CHECKED:
        _CHECKED = True
        try:
            from opentelemetry import trace
        except ImportError:  # the extra is not installed: spans cost nothing
            _TRACER = None
        else:
            _TRACER, _TRACE = trace.get_tracer("ceap"), trace
    return _TRACER


def _recording() -> bool:
    """Whether spans are recorded: a tracer provider is set (by ``setup_tracing``, the
    application, ``opentelemetry-instrument`` or ``OTEL_PYTHON_TRACER_PROVIDER``), not
    only the API's stand-in, whose spans record nothing."""
    provider = _TRACE.get_tracer_provider()  # the one set, whenever it was set
    return not isinstance(provider, (_TRACE.ProxyTracerProvider, _TRACE.NoOpTracerProvider))


@contextmanager
def _span(tracer: Any, name: str, attributes: Mapping[str, Any], kind: Any = None,
          context: Any = None) -> Iterator[Any]:
    kw: dict[str, Any] = {"attributes": {k: v for k, v in attributes.items() if v is not None}}
    if kind is not None:
        kw["kind"] = kind
    if context is not None:
        kw["context"] = context
    with tracer.start_as_current_span(name, **kw) as current:
        yield current


def span(name: str, **attributes: Any) -> Any:
    """A context manager: a span named ``name`` (``ceap.run``, ``ceap.dispatch.send``, ...),
    or nothing when OpenTelemetry is not installed. Yields the span (or None)."""
    tracer = _tracer()
    if tracer is None:
        return nullcontext(None)
    return _span(tracer, name, attributes)


def server_span(name: str, scope: Mapping[str, Any], **attributes: Any) -> Any:
    """A server span for an ASGI HTTP request, continuing the caller's trace (``traceparent``);
    nothing (None) while no tracer provider records spans: reading the caller's trace and
    opening a span that records nothing cost every request about 20 µs of CPU
    (bench/README.md, issue 11), and no handler passes the trace on."""
    tracer = _tracer()
    if tracer is None or not _recording():
        return nullcontext(None)
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()}
    return _span(tracer, name, attributes, kind=SpanKind.SERVER, context=propagate.extract(headers))


def setup_tracing(service: str) -> bool:
    """Install a tracer provider as ``CEAP_TRACES`` asks (``otlp`` or ``console``); returns
    whether tracing is on. Unset or ``off``: nothing is installed."""
    mode = (os.environ.get(TRACES_ENV) or "off").strip().lower()
    if mode in ("", "off", "none", "0", "false"):
        return False
    if mode not in ("otlp", "console"):
        raise ValueError(f"{TRACES_ENV}={mode!r}: expected otlp, console or off")
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ValueError(f"{TRACES_ENV}={mode} needs the otel extra: pip install 'ceap[otel]' "
                         f"({exc})") from None
    exporter: Any
    if mode == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ValueError(f"{TRACES_ENV}=otlp needs the otel extra: pip install 'ceap[otel]' "
                             f"({exc})") from None
        exporter = OTLPSpanExporter()
    else:
        import sys

        exporter = ConsoleSpanExporter(out=sys.stderr)
    name = os.environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


__all__ = ["server_span", "setup_tracing", "span"]
