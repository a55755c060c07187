"""What the long-running commands share for observability: ``--metrics-port``, and the
logging and tracing set-up of every command (``ceap --log-format ...``)."""

from __future__ import annotations

from typing import Annotated

import typer

MetricsPortOption = Annotated[int | None, typer.Option(
    "--metrics-port", min=1, max=65535, envvar="CEAP_METRICS_PORT",
    help="serve Prometheus metrics on this port (GET /metrics; docs/operations.md)")]
MetricsAddrOption = Annotated[str, typer.Option(
    "--metrics-addr", envvar="CEAP_METRICS_ADDR", help="address of the --metrics-port server")]


def start_metrics(port: int | None, addr: str = "0.0.0.0") -> None:
    """Start the metrics server when a port is given (a background thread)."""
    if port is None:
        return
    from ceap.observability.exposition import serve_metrics

    try:
        serve_metrics(port, addr)
    except OSError as exc:
        typer.echo(f"--metrics-port {port}: cannot listen on {addr}:{port}: {exc}", err=True)
        raise typer.Exit(2) from None


def setup(log_format: str | None, log_level: str | None) -> None:
    """Logging (JSON off a terminal) and, with CEAP_TRACES, tracing; exit 2 on a bad value."""
    from ceap.observability.logs import setup_logging
    from ceap.observability.tracing import setup_tracing

    try:
        setup_logging(log_format, log_level)
        setup_tracing("ceap")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
