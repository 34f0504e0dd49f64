"""snapship's Prometheus metrics: names, values, isolation, loopback-only endpoint."""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator

import prometheus_client
import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from snapship.telemetry.metrics import (
    SnapshipMetrics,
    error_label,
    free_loopback_port,
    observe_ebs_call,
    observe_run,
    observe_vcenter_call,
    shipping_slot,
    start_metrics_server,
    stop_metrics_server,
    temporal_runtime,
)

EXPECTED = {
    # name: (type, labels)
    "snapship_bytes_read_total": ("counter", {"source_server"}),
    "snapship_bytes_shipped_total": ("counter", {"source_server"}),
    "snapship_bytes_skipped_zero_total": ("counter", {"source_server"}),
    "snapship_blocks_written_total": ("counter", {"source_server"}),
    "snapship_run_duration_seconds": ("histogram", set()),
    "snapship_runs_total": ("counter", {"outcome", "reason"}),
    "snapship_replication_lag_seconds": ("gauge", {"source_server"}),
    "snapship_shipping_slots_in_use": ("gauge", set()),
    "snapship_shipping_waiting": ("gauge", set()),
    "snapship_permits_held": ("gauge", {"coordinator"}),
    "snapship_permits_waiting": ("gauge", {"coordinator"}),
    "snapship_permits_cap": ("gauge", {"coordinator"}),
    "snapship_permit_host_disks": ("gauge", {"coordinator", "host"}),
    "snapship_vcenter_call_seconds": ("histogram", {"operation"}),
    "snapship_vcenter_call_errors_total": ("counter", {"operation", "error"}),
    "snapship_ebs_call_seconds": ("histogram", {"operation"}),
    "snapship_ebs_call_errors_total": ("counter", {"operation", "error"}),
}


@pytest.fixture
def metrics() -> SnapshipMetrics:
    return SnapshipMetrics(CollectorRegistry())


def samples(m: SnapshipMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text, as a scraper would."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_names_types_and_labels_follow_prometheus_conventions(metrics: SnapshipMetrics) -> None:
    found = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = family.type
        assert re.fullmatch(r"snapship_[a-z0-9_]+", name), name
        if family.type == "counter":
            assert name.endswith("_total")
        if family.type == "histogram":
            assert name.endswith("_seconds")
    assert found == {name: kind for name, (kind, _) in EXPECTED.items()}
    metric_labels = {
        "snapship_bytes_read_total": metrics.bytes_read,
        "snapship_runs_total": metrics.runs,
        "snapship_replication_lag_seconds": metrics.replication_lag,
        "snapship_vcenter_call_seconds": metrics.vcenter_call,
        "snapship_vcenter_call_errors_total": metrics.vcenter_call_errors,
        "snapship_ebs_call_seconds": metrics.ebs_call,
        "snapship_ebs_call_errors_total": metrics.ebs_call_errors,
        "snapship_shipping_waiting": metrics.shipping_waiting,
        "snapship_permits_held": metrics.permits_held,
        "snapship_permits_waiting": metrics.permits_waiting,
        "snapship_permits_cap": metrics.permits_cap,
        "snapship_permit_host_disks": metrics.permit_host_disks,
    }
    for name, metric in metric_labels.items():
        assert set(metric._labelnames) == EXPECTED[name][1], name


def test_own_registry_not_the_global_default(metrics: SnapshipMetrics) -> None:
    metrics.bytes_read.labels(source_server="iso-test").inc(7)
    assert b"iso-test" not in generate_latest(prometheus_client.REGISTRY)
    other = SnapshipMetrics(CollectorRegistry())
    assert ("snapship_bytes_read_total", (("source_server", "iso-test"),)) not in samples(other)


def test_counter_and_gauge_values(metrics: SnapshipMetrics) -> None:
    metrics.bytes_read.labels("vm-1").inc(3 * 524288)
    metrics.bytes_shipped.labels("vm-1").inc(2 * 524288)
    metrics.bytes_skipped_zero.labels("vm-1").inc(524288)
    metrics.blocks_written.labels("vm-1").inc(2)
    metrics.replication_lag.labels("vm-1").set(42.5)
    metrics.shipping_waiting.set(3)
    with shipping_slot(metrics), shipping_slot(metrics):
        assert samples(metrics)[("snapship_shipping_slots_in_use", ())] == 2
    got = samples(metrics)
    vm = (("source_server", "vm-1"),)
    assert got[("snapship_bytes_read_total", vm)] == 1572864
    assert got[("snapship_bytes_shipped_total", vm)] == 1048576
    assert got[("snapship_bytes_skipped_zero_total", vm)] == 524288
    assert got[("snapship_blocks_written_total", vm)] == 2
    assert got[("snapship_replication_lag_seconds", vm)] == 42.5
    assert got[("snapship_shipping_waiting", ())] == 3
    assert got[("snapship_shipping_slots_in_use", ())] == 0
    metrics.forget_source_server("vm-1")
    assert ("snapship_bytes_read_total", vm) not in samples(metrics)


def test_call_timers_count_durations_and_errors(metrics: SnapshipMetrics) -> None:
    with observe_vcenter_call("CreateSnapshot", metrics):
        pass
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "PutSnapshotBlock"
    )
    with pytest.raises(ClientError), observe_ebs_call("PutSnapshotBlock", metrics):
        raise throttled
    with pytest.raises(TimeoutError), observe_vcenter_call("RemoveSnapshot", metrics):
        raise TimeoutError("task did not finish")
    got = samples(metrics)
    op = "operation"
    assert got[("snapship_vcenter_call_seconds_count", ((op, "CreateSnapshot"),))] == 1
    assert got[("snapship_vcenter_call_seconds_count", ((op, "RemoveSnapshot"),))] == 1
    assert got[("snapship_ebs_call_seconds_count", ((op, "PutSnapshotBlock"),))] == 1
    assert (
        got[
            (
                "snapship_ebs_call_errors_total",
                (("error", "ThrottlingException"), (op, "PutSnapshotBlock")),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "snapship_vcenter_call_errors_total",
                (("error", "TimeoutError"), (op, "RemoveSnapshot")),
            )
        ]
        == 1
    )
    assert (
        "snapship_vcenter_call_errors_total",
        (("error", "TimeoutError"), (op, "CreateSnapshot")),
    ) not in got


def test_error_label_is_bounded_and_message_free() -> None:
    exc = ClientError({"Error": {"Code": "AccessDenied", "Message": "user arn:aws:iam::1"}}, "X")
    assert error_label(exc) == "AccessDenied"
    assert error_label(ValueError("password=hunter2")) == "ValueError"


def test_observe_run_counts_outcomes(metrics: SnapshipMetrics) -> None:
    with observe_run(metrics):
        pass
    with observe_run(metrics) as outcome:
        outcome.outcome, outcome.reason = "discarded", "vmotion"
    with pytest.raises(RuntimeError), observe_run(metrics):
        raise RuntimeError("boom")
    got = samples(metrics)
    assert got[("snapship_runs_total", (("outcome", "success"), ("reason", "none")))] == 1
    assert got[("snapship_runs_total", (("outcome", "discarded"), ("reason", "vmotion")))] == 1
    assert got[("snapship_runs_total", (("outcome", "failure"), ("reason", "RuntimeError")))] == 1
    assert got[("snapship_run_duration_seconds_count", ())] == 3


def _non_loopback_ipv4() -> str | None:
    try:
        text = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    for cidr in re.findall(r"inet (\S+)", text):
        address = ipaddress.ip_interface(cidr).ip
        if not address.is_loopback:
            return str(address)
    return None


@pytest.fixture
def served(metrics: SnapshipMetrics) -> Iterator[int]:
    port = start_metrics_server(0, registry=metrics.registry)
    try:
        yield port
    finally:
        stop_metrics_server(port)


def test_metrics_endpoint_serves_on_loopback(metrics: SnapshipMetrics, served: int) -> None:
    metrics.blocks_written.labels("vm-9").inc(4)
    body = urllib.request.urlopen(f"http://127.0.0.1:{served}/metrics", timeout=5).read()
    assert b'snapship_blocks_written_total{source_server="vm-9"} 4.0' in body


def test_metrics_endpoint_not_reachable_from_other_addresses(served: int) -> None:
    other = _non_loopback_ipv4()
    if other is None:
        # No other interface to try: the bound address is what keeps it private.
        with socket.create_connection(("127.0.0.1", served), timeout=2) as sock:
            assert sock.getpeername()[0] == "127.0.0.1"
        return
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((other, served), timeout=2).close()


def test_temporal_runtime_exports_on_loopback() -> None:
    port = free_loopback_port()
    runtime = temporal_runtime(port)
    assert runtime is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((other, port), timeout=2).close()
