"""What CEAP tells an operator: Prometheus metrics (``metrics``: every metric, defined
in one place; ``exposition``: ``/metrics`` and ``--metrics-port``), structured logs
(``logs``) and optional OpenTelemetry traces (``tracing``). See docs/operations.md.
"""
