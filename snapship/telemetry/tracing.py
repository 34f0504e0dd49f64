"""OpenTelemetry traces for runs, vCenter calls and EBS calls.

Why: a slow run is usually one slow call (a snapshot removal that waits for consolidation, an
EBS throttle). Traces show where a run's time went and tie the Temporal workflow, its activities
and the calls inside them together.

Configuration follows the standard OTEL_* environment variables, so operators use what they
already know:
- OTEL_SDK_DISABLED=true           no tracing at all;
- OTEL_TRACES_EXPORTER=otlp|console|none (comma list); `otlp` is implied when
  OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set;
- OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc|http/protobuf, endpoint/headers/timeout variables
  are read by the exporter itself; OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES by the SDK;
- OTEL_TRACES_SAMPLER(_ARG) by the SDK's TracerProvider.
The OTLP exporter is an optional package (opentelemetry-exporter-otlp); when it is asked for but
missing we warn once and carry on. Unconfigured, the provider has no processor: spans cost a few
microseconds and go nowhere.

We keep our own TracerProvider (and make it the global one only if nobody set one first), and
exporters are added through a switchboard processor that can also remove them, so a test can
capture spans in memory and detach again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor

log = logging.getLogger(__name__)

TRACER_NAME = "snapship"
ATTRIBUTE_PREFIX = "snapship."


class _Switchboard(SpanProcessor):
    """A span processor whose children can be added and removed at run time."""

    def __init__(self) -> None:
        self._children: tuple[SpanProcessor, ...] = ()
        self._lock = threading.Lock()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._children = (*self._children, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._children = tuple(p for p in self._children if p is not processor)
        processor.shutdown()

    @property
    def active(self) -> bool:
        return bool(self._children)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for child in self._children:
            child.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for child in self._children:
            child.on_end(span)

    def shutdown(self) -> None:
        for child in self._children:
            child.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(child.force_flush(timeout_millis) for child in self._children)


_lock = threading.Lock()
_provider: TracerProvider | None = None
_switchboard = _Switchboard()
_warned_missing_otlp = False
_tracer: trace.Tracer | None = None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _requested_exporters() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if raw:
        return [e.strip().lower() for e in raw.split(",") if e.strip()]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return ["otlp"]
    return []


def _otlp_exporter() -> SpanExporter | None:
    global _warned_missing_otlp
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).lower()
    try:
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as HttpExporter,
            )

            exporter: SpanExporter = HttpExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )

            exporter = GrpcExporter()
    except ImportError:
        if not _warned_missing_otlp:
            _warned_missing_otlp = True
            package = "http" if protocol.startswith("http") else "grpc"
            log.warning(
                "OTLP trace export was requested (OTEL_* environment) but the exporter is not "
                "installed; traces are not exported. Install it with: "
                "pip install opentelemetry-exporter-otlp-proto-%s",
                package,
            )
        return None
    return exporter


def configure_tracing(service_name: str = "snapship") -> TracerProvider:
    """Build (once) the provider from OTEL_* variables and return it.

    Safe to call repeatedly; later calls return the same provider.
    """
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
        )
        provider = TracerProvider(resource=resource, shutdown_on_exit=True)
        provider.add_span_processor(_switchboard)
        if not _env_true("OTEL_SDK_DISABLED"):
            for name in _requested_exporters():
                if name == "otlp":
                    otlp = _otlp_exporter()
                    if otlp is not None:
                        _switchboard.add(BatchSpanProcessor(otlp))
                elif name == "console":
                    _switchboard.add(SimpleSpanProcessor(ConsoleSpanExporter()))
                elif name != "none":
                    log.warning("OTEL_TRACES_EXPORTER=%s is not supported; ignored", name)
        _provider = provider
    # Become the global provider only if the process has none yet (it can be set only once).
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    return provider


def get_tracer() -> trace.Tracer:
    """snapship's tracer (a no-op tracer when OTEL_SDK_DISABLED=true)."""
    global _tracer
    if _env_true("OTEL_SDK_DISABLED"):
        return trace.NoOpTracer()
    if _tracer is None:
        _tracer = configure_tracing().get_tracer(TRACER_NAME)
    return _tracer


def add_exporter(exporter: SpanExporter, batch: bool = False) -> SpanProcessor:
    """Send spans to `exporter` too; returns the processor to pass to `remove_processor`."""
    configure_tracing()
    processor: SpanProcessor = (
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    _switchboard.add(processor)
    return processor


def remove_processor(processor: SpanProcessor) -> None:
    _switchboard.remove(processor)


@contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Collect every finished span in memory for the duration of the block (tests)."""
    exporter = InMemorySpanExporter()
    processor = add_exporter(exporter)
    try:
        yield exporter
    finally:
        remove_processor(processor)


def install_in_memory_exporter() -> InMemorySpanExporter:
    """Collect spans in memory until process exit (tests that cannot use a `with` block)."""
    exporter = InMemorySpanExporter()
    add_exporter(exporter)
    return exporter


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


@contextmanager
def span(name: str, **attrs: Any) -> Iterator[trace.Span]:
    """A span around one vCenter/EBS call (or any step), child of the current span.

    Attributes are prefixed with "snapship." (`vm="vm-42"` -> `snapship.vm`); None values are
    left out. The source_server and run_id bound with `snapship.telemetry.logs.log_context`
    are added automatically, so the VM and run ids are on every span without passing them.
    Exceptions are recorded on the span and re-raised. Never pass a secret as an attribute.
    """
    from snapship.telemetry.logs import current_context

    attributes: dict[str, Any] = {}
    for key, value in {**current_context(), **attrs}.items():
        if value is None:
            continue
        full = key if "." in key else ATTRIBUTE_PREFIX + key
        attributes[full] = _attribute_value(value)
    with get_tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


def temporal_tracing_interceptor(always_create_workflow_spans: bool = True) -> TracingInterceptor:
    """Temporal's OpenTelemetry interceptor, bound to snapship's tracer.

    Pass it in `Client.connect(interceptors=[...])` (applies to workers built on that client
    too). Workflow spans are created even without a client span by default, because snapship's
    workflows are mostly started by schedules and Updates from the `temporal` CLI, which carry
    no trace context; the price is that such workflow spans are trace roots.
    """
    return TracingInterceptor(
        get_tracer(), always_create_workflow_spans=always_create_workflow_spans
    )
