"""snapship's Prometheus metrics and the Temporal SDK's own metrics endpoint.

Why a registry of our own: tests (and a process embedding snapship) must be able to look at
snapship's numbers in isolation, so nothing here touches prometheus-client's global default
registry. `METRICS` is the process-wide set; `SnapshipMetrics(CollectorRegistry())` builds an
independent one.

The client VM accepts no inbound connections by design, so the metrics endpoint binds loopback
unless the operator passes another address (a node exporter / agent on the VM scrapes it, or
the operator opens it deliberately — we log a warning, we do not refuse).

Label cardinality: `source_server` is one value per replicated VM (bounded by the inventory);
`operation` is a fixed API name; `error` is an error *code or class name*, never a message, so
no VM path or credential can end up in a label.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from snapship.telemetry.tracing import span

log = logging.getLogger(__name__)

# The `*_created` companion series double the text output and nobody graphs them.
disable_created_metrics()

_LOOPBACK = ("127.0.0.1", "::1", "localhost")

RUN_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
VCENTER_CALL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
EBS_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SnapshipMetrics:
    """All snapship metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.bytes_read = Counter(
            "snapship_bytes_read_total",
            "Bytes read from source disks through VDDK.",
            ["source_server"],
            registry=r,
        )
        self.bytes_shipped = Counter(
            "snapship_bytes_shipped_total",
            "Bytes written to EBS with PutSnapshotBlock.",
            ["source_server"],
            registry=r,
        )
        self.bytes_skipped_zero = Counter(
            "snapship_bytes_skipped_zero_total",
            "Bytes not sent because the block was all zeros (first run of a chain only).",
            ["source_server"],
            registry=r,
        )
        self.blocks_written = Counter(
            "snapship_blocks_written_total",
            "EBS blocks (512 KiB) written with PutSnapshotBlock.",
            ["source_server"],
            registry=r,
        )
        self.run_duration = Histogram(
            "snapship_run_duration_seconds",
            "Wall time of one snapshot-shipping run, preflight to commit.",
            buckets=RUN_DURATION_BUCKETS,
            registry=r,
        )
        self.runs = Counter(
            "snapship_runs_total",
            "Finished snapshot-shipping runs by outcome and reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.replication_lag = Gauge(
            "snapship_replication_lag_seconds",
            "Age of the newest complete snapshot group of a source server.",
            ["source_server"],
            registry=r,
        )
        self.shipping_slots_in_use = Gauge(
            "snapship_shipping_slots_in_use",
            "Shipping activity slots currently busy (the parallel cap is the slot count).",
            registry=r,
        )
        self.shipping_waiting = Gauge(
            "snapship_shipping_waiting",
            "Source servers waiting for a shipping slot (PENDING_SNAPSHOT_SHIPPING).",
            registry=r,
        )
        # The permit coordinators' view (the same facts as `snapship servers`), per vCenter.
        self.permits_held = Gauge(
            "snapship_permits_held",
            "Source servers holding a shipping permit (their VMware snapshot may exist).",
            ["coordinator"],
            registry=r,
        )
        self.permits_waiting = Gauge(
            "snapship_permits_waiting",
            "Source servers waiting for a shipping permit.",
            ["coordinator"],
            registry=r,
        )
        self.permits_cap = Gauge(
            "snapship_permits_cap",
            "The vCenter's cap on VMs shipping at once.",
            ["coordinator"],
            registry=r,
        )
        self.permit_host_disks = Gauge(
            "snapship_permit_host_disks",
            "Disks under a snapship snapshot per ESXi host (counted by the permits).",
            ["coordinator", "host"],
            registry=r,
        )
        self.vcenter_call = Histogram(
            "snapship_vcenter_call_seconds",
            "Duration of vCenter API calls (including task waits) by operation.",
            ["operation"],
            buckets=VCENTER_CALL_BUCKETS,
            registry=r,
        )
        self.vcenter_call_errors = Counter(
            "snapship_vcenter_call_errors_total",
            "Failed vCenter API calls by operation and fault type.",
            ["operation", "error"],
            registry=r,
        )
        self.ebs_call = Histogram(
            "snapship_ebs_call_seconds",
            "Duration of EBS direct API / EC2 calls by operation.",
            ["operation"],
            buckets=EBS_CALL_BUCKETS,
            registry=r,
        )
        self.ebs_call_errors = Counter(
            "snapship_ebs_call_errors_total",
            "Failed EBS direct API / EC2 calls by operation and error code.",
            ["operation", "error"],
            registry=r,
        )

    def forget_source_server(self, source_server: str) -> None:
        """Drop a source server's label sets (after archive) so series do not linger."""
        for metric in (
            self.bytes_read,
            self.bytes_shipped,
            self.bytes_skipped_zero,
            self.blocks_written,
            self.replication_lag,
        ):
            try:
                metric.remove(source_server)
            except KeyError:
                pass


#: The process-wide metrics (own registry, not prometheus-client's global one).
METRICS = SnapshipMetrics()
REGISTRY = METRICS.registry


def error_label(exc: BaseException) -> str:
    """A bounded, secret-free label for an error: AWS error code, else the fault/class name."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str) and code:
            return code[:64]
    name = type(exc).__name__
    # pyvmomi fault classes are named like "vim.fault.FileFault": keep the last part.
    return name.rsplit(".", 1)[-1][:64] or "Exception"


@contextmanager
def _observe(
    kind: str, histogram: Histogram, errors: Counter, operation: str, traced: bool = True
) -> Iterator[None]:
    # One span per call as well, so the worker gets traces wherever it has timings (but for
    # the calls made per block, which pass traced=False).
    with span(f"{kind}.{operation}") if traced else nullcontext():
        start = time.perf_counter()
        failed: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failed = exc
            raise
        finally:
            _count(histogram, errors, operation, time.perf_counter() - start, failed)


def _count(
    histogram: Histogram, errors: Counter, operation: str, seconds: float,
    error: BaseException | None,
) -> None:
    """How every call is counted: its time, and its error by label."""
    if error is not None:
        errors.labels(operation=operation, error=error_label(error)).inc()
    histogram.labels(operation=operation).observe(seconds)


def observe_vcenter_call(
    operation: str, metrics: SnapshipMetrics | None = None
) -> AbstractContextManager[None]:
    """`with observe_vcenter_call("CreateSnapshot"):` times the block, counts errors by fault
    type and opens a `vcenter.CreateSnapshot` span (with the bound source_server/run_id)."""
    m = metrics or METRICS
    return _observe("vcenter", m.vcenter_call, m.vcenter_call_errors, operation)


def observe_ebs_call(
    operation: str, metrics: SnapshipMetrics | None = None, *, traced: bool = True
) -> AbstractContextManager[None]:
    """`with observe_ebs_call("StartSnapshot"):` times the block, counts errors by AWS error
    code and opens an `ebs.StartSnapshot` span.

    `traced=False` is for PutSnapshotBlock, made 2,048 times per GiB: timed and counted like any
    call, but without a span of its own (an OpenTelemetry span cost about as much CPU as the
    request's signing, and thousands of spans per disk bury the trace); the disk's upload has
    one span (`ebs.PutSnapshotBlocks`) with its totals instead."""
    m = metrics or METRICS
    return _observe("ebs", m.ebs_call, m.ebs_call_errors, operation, traced)


def record_ebs_call(
    operation: str,
    seconds: float,
    error: BaseException | None = None,
    metrics: SnapshipMetrics | None = None,
) -> None:
    """Count and time an EBS call another process made for us (a VDDK reader sending a block
    the worker signed), as `observe_ebs_call` counts the worker's own."""
    m = metrics or METRICS
    _count(m.ebs_call, m.ebs_call_errors, operation, seconds, error)


@contextmanager
def observe_run(metrics: SnapshipMetrics | None = None) -> Iterator[RunOutcome]:
    """Time one shipping run and count it once, by the outcome the body sets.

    The body sets `outcome.outcome`/`outcome.reason`; an exception that escapes counts as
    outcome "failure" with the error label as reason unless the body already set one.
    """
    m = metrics or METRICS
    outcome = RunOutcome()
    start = time.perf_counter()
    try:
        yield outcome
    except BaseException as exc:
        if outcome.outcome == "success":
            outcome.outcome = "failure"
            outcome.reason = error_label(exc)
        raise
    finally:
        m.run_duration.observe(time.perf_counter() - start)
        m.runs.labels(outcome=outcome.outcome, reason=outcome.reason).inc()


@dataclass
class RunOutcome:
    """What `observe_run` counts: outcome in success/failure/cancelled/discarded."""

    outcome: str = "success"
    reason: str = "none"


@contextmanager
def shipping_slot(metrics: SnapshipMetrics | None = None) -> Iterator[None]:
    """Count a busy shipping slot for the duration of the block."""
    m = metrics or METRICS
    m.shipping_slots_in_use.inc()
    try:
        yield
    finally:
        m.shipping_slots_in_use.dec()


# -- HTTP endpoint ----------------------------------------------------------------------------

_servers: dict[int, Any] = {}
_servers_lock = threading.Lock()


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> int:
    """Serve /metrics for `registry` (default: snapship's) on addr:port; returns the bound port.

    Loopback by default. Another address is allowed (the operator asked for it) but logged as
    a warning, because the client is meant to accept no inbound connections.
    """
    if addr not in _LOOPBACK:
        log.warning(
            "metrics endpoint bound to %s, not loopback: it accepts inbound connections", addr
        )
    server, _thread = start_http_server(port, addr=addr, registry=registry or REGISTRY)
    bound = int(server.server_address[1])
    with _servers_lock:
        _servers[bound] = server
    return bound


def stop_metrics_server(port: int) -> None:
    """Stop a server started by `start_metrics_server` (tests; clean shutdown)."""
    with _servers_lock:
        server = _servers.pop(port, None)
    if server is not None:
        server.shutdown()
        server.server_close()


# -- Temporal SDK metrics ---------------------------------------------------------------------


def free_loopback_port(addr: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Temporal core cannot report the port it bound)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((addr, 0))
        return int(sock.getsockname()[1])


def temporal_runtime(port: int, addr: str = "127.0.0.1") -> Runtime:
    """A Temporal `Runtime` exporting the SDK's own metrics on addr:port (Prometheus).

    Pass it to `Client.connect(..., runtime=...)`. Counters get `_total`, durations are in
    seconds (Prometheus conventions); metric names keep Temporal's `temporal_` prefix, so they
    do not clash with snapship's. Temporal's core cannot report a port it picked, so call
    `free_loopback_port()` first when you need a free one and must know it; `port=0` picks
    one and logs it.
    """
    if addr not in _LOOPBACK:
        log.warning("Temporal SDK metrics bound to %s, not loopback", addr)
    if port == 0:
        port = free_loopback_port(addr)
        log.info("Temporal SDK metrics on %s:%d", addr, port)
    host = f"[{addr}]" if ":" in addr else addr
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
            )
        )
    )
    return runtime
