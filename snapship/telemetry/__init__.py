"""Observability for snapship: Prometheus metrics, OpenTelemetry traces, JSON logs.

Each submodule is usable alone; this package re-exports the handful of names the worker and
activities call (see each module's docstring for why it works the way it does).
"""

from snapship.telemetry.logs import configure_logging, log_context, redact
from snapship.telemetry.metrics import (
    METRICS,
    SnapshipMetrics,
    observe_ebs_call,
    observe_run,
    observe_vcenter_call,
    shipping_slot,
    start_metrics_server,
    temporal_runtime,
)
from snapship.telemetry.tracing import configure_tracing, span, temporal_tracing_interceptor

__all__ = [
    "METRICS",
    "SnapshipMetrics",
    "configure_logging",
    "configure_tracing",
    "log_context",
    "observe_ebs_call",
    "observe_run",
    "observe_vcenter_call",
    "redact",
    "shipping_slot",
    "span",
    "start_metrics_server",
    "temporal_runtime",
    "temporal_tracing_interceptor",
]
