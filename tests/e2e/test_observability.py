"""What an operator sees and what a reviewer checks, after real runs on the sandbox:
/metrics counters equal what was shipped, no secret anywhere in histories or logs, payloads
unreadable without the key, and one run's trace with vCenter and EBS calls nested in it."""

from __future__ import annotations

import asyncio
import io
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from snapship.codec import EncryptionCodec
from snapship.messages import ReplicationCommand
from snapship.telemetry.logs import configure_logging
from snapship.telemetry.tracing import capture_spans
from tests.e2e.harness import AWS_SECRET, PASSWORD, TEST_KEYRING, runs_ok, sandbox, wait_status
from workflows.source_server import SourceServerWorkflow

MIB = 1024 * 1024
SECRETS = (PASSWORD.encode(), AWS_SECRET.encode())


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric(values: dict[str, float], name: str, server: str) -> float:
    return values.get(f'{name}{{source_server="{server}"}}', 0.0)


async def test_metrics_count_exactly_what_was_shipped(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "obs-01", "disks": [{"capacity_mib": 8}, {"capacity_kb": 1500}]}
    async with sandbox(tmp_path, temporal_env, [vm], metrics=True) as sb:
        sb.sim.admin.write("obs-01", 0, length=3 * MIB, random_seed=1)
        sb.sim.admin.write("obs-01", 0, length=700 * 1024, random_seed=2, disk=1)
        sb.aws.admin.set_faults(latency_ms=300, operations=["PutSnapshotBlock"])
        port = sb.config.telemetry.metrics_port
        handle = await sb.start("obs-01")
        sid = handle.id
        during: list[float] = []
        while not (await handle.query(SourceServerWorkflow.status)).runs[-1].outcome:
            during.append(scrape(port).get("snapship_shipping_slots_in_use", 0.0))
            await asyncio.sleep(0.2)
        assert max(during) == 1.0, "the shipping slot was seen busy while shipping"
        sb.aws.admin.reset_faults()
        sb.sim.admin.write("obs-01", 5 * MIB, length=1000, random_seed=3)
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await wait_status(handle, runs_ok(2))
        after = scrape(port)
        shipped = sum(r.bytes_shipped for r in st.runs)
        written = sum(r.blocks_written for r in st.runs)
        assert shipped > 0
        assert metric(after, "snapship_bytes_shipped_total", sid) == shipped
        assert metric(after, "snapship_blocks_written_total", sid) == written
        assert metric(after, "snapship_bytes_read_total", sid) >= shipped
        assert after.get("snapship_shipping_slots_in_use") == 0.0
        assert metric(after, "snapship_replication_lag_seconds", sid) >= 0
        assert any(k.startswith("snapship_vcenter_call_seconds_count") for k in after)
        assert any('operation="PutSnapshotBlock"' in k for k in after)
        temporal = urllib.request.urlopen(
            f"http://127.0.0.1:{sb.config.telemetry.temporal_metrics_port}/metrics", timeout=10
        ).read()
        assert b"temporal_" in temporal, "the Temporal SDK's own metrics are exposed"


def payloads(message: Message) -> Iterator[Payload]:
    """Every Payload inside a history proto, however deeply nested (lists and maps too)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for item in value.values():
                if isinstance(item, Message):
                    yield from payloads(item)
        elif isinstance(value, Message):
            yield from payloads(value)
        else:  # a repeated message field
            for item in value:
                yield from payloads(item)


async def test_no_secret_in_histories_or_logs_and_payloads_need_the_key(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    log_buffer = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(logging.DEBUG, stream=log_buffer)
    try:
        vm = {"name": "sec-01", "disks": [{"capacity_mib": 2}]}
        async with sandbox(tmp_path, temporal_env, [vm]) as sb:
            sb.sim.admin.write("sec-01", 0, length=MIB, random_seed=5)
            handle = await sb.start("sec-01")
            await wait_status(handle, runs_ok(1))
            sb.sim.admin.write("sec-01", 0, length=10, random_seed=6)
            await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
            await wait_status(handle, runs_ok(2))
            await handle.execute_update(
                SourceServerWorkflow.stop_replication, ReplicationCommand()
            )
            codec = EncryptionCodec(TEST_KEYRING)
            checked = 0
            query = f"WorkflowId STARTS_WITH '{sb.id_prefix()}'"
            async for wf in sb.client.list_workflows(query):
                history = await sb.client.get_workflow_handle(wf.id).fetch_history()
                raw = history.to_json().encode()
                for secret in SECRETS:
                    assert secret not in raw
                for event in history.events:
                    for p in payloads(event):
                        if "type" in p.metadata:
                            # A search attribute: the server must read it, so it stays plain.
                            for secret in SECRETS:
                                assert secret not in p.data
                            continue
                        assert p.metadata.get("encoding") == b"binary/encrypted", p.metadata
                        (plain,) = await codec.decode([p])
                        for secret in SECRETS:
                            assert secret not in plain.data
                        checked += 1
                described = await sb.client.get_workflow_handle(wf.id).describe()
                attrs = repr(described.raw_description)
                for secret in SECRETS:
                    assert secret.decode() not in attrs
            assert checked > 20, f"only {checked} payloads found; the walk is broken"
            # Without the key, a client cannot read the workflow's answers.
            plain_client = await Client.connect(sb.config.temporal.address)
            with pytest.raises(Exception):  # noqa: B017 - any decode failure will do
                await plain_client.get_workflow_handle(handle.id).query(
                    SourceServerWorkflow.status
                )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    logs = log_buffer.getvalue()
    assert "sec-01" in logs or "snapship" in logs, "log capture is broken"
    for secret in SECRETS:
        assert secret.decode() not in logs


async def test_one_run_traced_with_nested_vcenter_and_ebs_calls(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "trace-01", "disks": [{"capacity_mib": 2}]}
    with capture_spans() as exporter:
        async with sandbox(tmp_path, temporal_env, [vm]) as sb:
            sb.sim.admin.write("trace-01", 0, length=MIB, random_seed=8)
            handle = await sb.start("trace-01")
            await wait_status(handle, runs_ok(1))
        spans = exporter.get_finished_spans()
    by_id: dict[int, Any] = {s.context.span_id: s for s in spans}

    def ancestors(s: Any) -> list[str]:
        names = []
        while s.parent is not None and s.parent.span_id in by_id:
            s = by_id[s.parent.span_id]
            names.append(s.name)
        return names

    names = {s.name for s in spans}
    assert "RunActivity:snapship.ship" in names, sorted(names)
    # One span per disk upload, with its totals (1 MiB written: two blocks), none per block.
    put = [s for s in spans if s.name == "ebs.PutSnapshotBlocks"]
    assert put and all("RunActivity:snapship.ship" in ancestors(s) for s in put)
    assert [(s.attributes or {}).get("snapship.blocks_sent") for s in put] == [2]
    assert "ebs.PutSnapshotBlock" not in names
    create = [s for s in spans if s.name == "vcenter.CreateSnapshot_Task"]
    # The run's snapshot, under its activity (CBT activation takes one more, under ensure_cbt).
    assert any("RunActivity:snapship.create_snapshot" in ancestors(s) for s in create)
    assert all(any(a.startswith("RunActivity:") for a in ancestors(s)) for s in create)
    # The activity hangs under the workflow's StartActivity, itself under the workflow start:
    # one trace for the whole run.
    chain = ancestors(put[0])
    assert chain[:2] == ["RunActivity:snapship.ship", "StartActivity:snapship.ship"], chain
    assert chain[-1] == "StartWorkflow:SourceServerWorkflow", chain
    assert all(s.attributes.get("snapship.source_server") == handle.id for s in put)
