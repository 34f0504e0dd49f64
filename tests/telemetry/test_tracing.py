"""span() nests, carries VM/run ids, records errors; OTLP missing -> one warning."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from opentelemetry.trace import StatusCode

from snapship.telemetry import tracing
from snapship.telemetry.logs import log_context
from snapship.telemetry.tracing import capture_spans, span


def test_nested_spans_with_ids_as_attributes() -> None:
    with (
        capture_spans() as exporter,
        log_context(source_server="s-0042", run_id="run-3"),
        span("ship_disk", disk_key=2000) as outer,
    ):
        with span("ebs.PutSnapshotBlock", block_index=7, snapshot_id="snap-1"):
            pass
        with span("vcenter.QueryChangedDiskAreas", start_offset=0, skipped=None):
            pass
        assert outer.is_recording()
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert set(finished) == {"ship_disk", "ebs.PutSnapshotBlock", "vcenter.QueryChangedDiskAreas"}
    outer_span = finished["ship_disk"]
    for child in ("ebs.PutSnapshotBlock", "vcenter.QueryChangedDiskAreas"):
        s = finished[child]
        assert s.parent is not None and s.parent.span_id == outer_span.context.span_id
        assert s.context.trace_id == outer_span.context.trace_id
    put = finished["ebs.PutSnapshotBlock"]
    assert put.attributes is not None
    assert put.attributes["snapship.source_server"] == "s-0042"
    assert put.attributes["snapship.run_id"] == "run-3"
    assert put.attributes["snapship.block_index"] == 7
    assert put.attributes["snapship.snapshot_id"] == "snap-1"
    query = finished["vcenter.QueryChangedDiskAreas"]
    assert query.attributes is not None and "snapship.skipped" not in query.attributes
    assert outer_span.parent is None


def test_exceptions_are_recorded_and_reraised() -> None:
    with (
        capture_spans() as exporter,
        pytest.raises(TimeoutError),
        span("vcenter.RemoveSnapshot", vm="vm-17"),
    ):
        raise TimeoutError("task timed out")
    [finished] = exporter.get_finished_spans()
    assert finished.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in finished.events)


def test_capture_detaches_after_the_block() -> None:
    with capture_spans() as exporter, span("inside"):
        pass
    with span("outside"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["inside"]


def test_missing_otlp_exporter_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setattr(tracing, "_warned_missing_otlp", False)
    assert tracing._requested_exporters() == ["otlp"]
    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp") is not None
    except ModuleNotFoundError:
        installed = False
    with caplog.at_level(logging.WARNING, logger=tracing.__name__):
        first = tracing._otlp_exporter()
        second = tracing._otlp_exporter()
    warnings = [r for r in caplog.records if "OTLP" in r.getMessage()]
    if installed:
        assert first is not None and second is not None and warnings == []
    else:
        assert first is None and second is None
        assert len(warnings) == 1
        assert "pip install opentelemetry-exporter-otlp" in warnings[0].getMessage()


def test_exporter_selection_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert tracing._requested_exporters() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console, none")
    assert tracing._requested_exporters() == ["console", "none"]


def test_interceptor_uses_snapship_tracer() -> None:
    interceptor = tracing.temporal_tracing_interceptor()
    from temporalio.contrib.opentelemetry import TracingInterceptor

    assert isinstance(interceptor, TracingInterceptor)
    with (
        capture_spans() as exporter,
        interceptor.tracer.start_as_current_span("via-interceptor-tracer"),
    ):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["via-interceptor-tracer"]


def test_call_timers_also_open_spans() -> None:
    from botocore.exceptions import ClientError

    from snapship.telemetry.metrics import SnapshipMetrics, observe_ebs_call, observe_vcenter_call

    metrics = SnapshipMetrics()
    denied = ClientError({"Error": {"Code": "AccessDeniedException"}}, "StartSnapshot")
    with capture_spans() as exporter, log_context(source_server="s-77", run_id="run-1"):
        with observe_vcenter_call("CreateSnapshot", metrics):
            pass
        with pytest.raises(ClientError), observe_ebs_call("StartSnapshot", metrics):
            raise denied
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert set(finished) == {"vcenter.CreateSnapshot", "ebs.StartSnapshot"}
    assert finished["ebs.StartSnapshot"].status.status_code == StatusCode.ERROR
    attributes = finished["vcenter.CreateSnapshot"].attributes
    assert attributes is not None and attributes["snapship.source_server"] == "s-77"
