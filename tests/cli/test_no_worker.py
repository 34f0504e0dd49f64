"""Commands never hang: with no worker, the console says so in seconds and nothing applies later.

Servers are created the way discovery creates them, on a control queue nobody polls. Each
command must exit non-zero within 10 s naming `snapship worker`; once a worker polls the queue,
none of those commands (nor a command whose deadline expired while queued) has taken effect.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, ScheduleHandle, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.discovery import signal_with_start
from snapship.cli import app, console
from snapship.cli import discover as discover_cli
from snapship.command_deadline import EXPIRED_MESSAGE
from snapship.config import ClientConfig
from snapship.messages import DiscoveredServer, Eligibility, SourceServerStatus, VmFacts
from workflows.discovery import DISCOVERY_MANUAL_ID, DISCOVERY_SCHEDULE_ID
from workflows.source_server import SourceServerWorkflow

VCENTER_UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1"
MAX_SECONDS = 10.0


@dataclass
class Idle:
    client: Client
    cfg: ClientConfig
    data_dir: Path
    workflow_id: str


def _server(name: str, uuid_: str) -> DiscoveredServer:
    return DiscoveredServer(
        facts=VmFacts(moref=f"vm-{name}", name=name, instance_uuid=uuid_),
        eligibility=Eligibility(eligible=True),
        discovered_at="2026-12-01T00:00:00+00:00",
    )


@pytest_asyncio.fixture
async def idle(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Idle]:
    client = temporal_env.client
    cfg = ClientConfig(data_dir=str(tmp_path), client_id="idle")
    cfg.vcenter.host = f"vc-{uuid.uuid4().hex[:8]}.example.test"
    cfg.vcenter.instance_uuid = VCENTER_UUID
    cfg.temporal.control_task_queue = f"idle-{uuid.uuid4().hex[:8]}"
    cfg.save()

    async def fake_connect(_cfg: ClientConfig) -> Client:
        return client

    monkeypatch.setattr(app, "connect", fake_connect)
    workflow_id = await signal_with_start(
        client, cfg, VCENTER_UUID, _server("web-01", str(uuid.uuid4()))
    )
    for _ in range(100):  # visibility is eventually consistent
        listed = [e async for e in client.list_workflows(f'WorkflowId="{workflow_id}"')]
        if listed:
            break
        await asyncio.sleep(0.1)
    yield Idle(client, cfg, tmp_path, workflow_id)
    for wid in (workflow_id, DISCOVERY_MANUAL_ID):
        try:
            await client.get_workflow_handle(wid).terminate("test over")
        except RPCError:
            pass
    gc.collect()


async def _timed_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, float]:
    started = time.monotonic()
    code = await asyncio.to_thread(app.main, list(argv))
    out, err = capsys.readouterr()
    return code, out + err, time.monotonic() - started


async def _exists(handle: ScheduleHandle) -> bool:
    try:
        await handle.describe()
    except RPCError:
        return False
    return True


async def _status_with_worker(idle: Idle) -> SourceServerStatus:
    handle = idle.client.get_workflow_handle(idle.workflow_id)
    status: SourceServerStatus = await handle.query(
        "status", result_type=SourceServerStatus, rpc_timeout=timedelta(seconds=30)
    )
    return status


async def test_commands_without_worker_fail_fast_and_never_apply(
    idle: Idle, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(idle.data_dir)
    t0 = datetime.now(UTC)
    schedule_before = await _exists(idle.client.get_schedule_handle(DISCOVERY_SCHEDULE_ID))
    for argv in (
        ("replicate", "start", "web-01"),
        ("replicate", "pause", "web-01"),
        ("servers", "show", "web-01"),
        ("discover",),
    ):
        code, text, seconds = await _timed_cli(capsys, *argv, "--data-dir", d)
        assert code != 0, (argv, text)
        assert seconds < MAX_SECONDS, (argv, seconds)
        assert "no snapship worker is running" in text and "`snapship worker`" in text, text
        assert len(text.strip().splitlines()) == 1, text  # one line, no traceback

    # The list still answers from visibility, says why live columns are missing, exits non-zero.
    code, text, seconds = await _timed_cli(capsys, "servers", "--all", "--data-dir", d)
    assert code == app.EXIT_PARTIAL and "web-01" in text and "snapship worker" in text
    assert seconds < MAX_SECONDS

    # A worker that just died still looks alive to DescribeTaskQueue for a while: the command
    # then goes out with its deadline, the console gives up at that deadline ...
    short = timedelta(seconds=1)
    orig = console.ACCEPT_TIMEOUT
    console.ACCEPT_TIMEOUT = short
    try:
        rows = (await console.select(idle.client, console.VIEW_ALL, idle.cfg.vcenter.host,
                                     names=["web-01"], with_status=False)).rows
        started = time.monotonic()
        outcome = await console.send_command(idle.client, rows[0], "start")
    finally:
        console.ACCEPT_TIMEOUT = orig
    assert not outcome.accepted and "will not be applied later" in outcome.message
    assert time.monotonic() - started < MAX_SECONDS
    await asyncio.sleep(1.2)  # past the command's not_after

    # ... and when a worker finally runs, the workflow refuses the expired command.
    async with Worker(idle.client, task_queue=idle.cfg.temporal.control_task_queue,
                      workflows=[SourceServerWorkflow]):
        status = await _status_with_worker(idle)
        assert not status.replicating and not status.paused
        assert (status.lifecycle_state, status.data_replication_state) == (
            "DISCOVERED", "STOPPED")
        # Nothing of `discover` was left behind to run now: no new pass, no new schedule.
        try:
            info = await idle.client.get_workflow_handle(DISCOVERY_MANUAL_ID).describe()
            assert info.start_time is not None and info.start_time < t0
        except RPCError:
            pass
        schedule_after = await _exists(idle.client.get_schedule_handle(DISCOVERY_SCHEDULE_ID))
        assert schedule_after == schedule_before
        # With the worker up, the same command is accepted: the check is not always "no".
        code, text, _ = await _timed_cli(capsys, "replicate", "start", "web-01",
                                         "--data-dir", d)
        assert code == 0, text
    history = [e async for e in idle.client.get_workflow_handle(idle.workflow_id)
               .fetch_history_events()]
    accepted = [
        e for e in history
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 1  # only the command sent while the worker ran


async def test_expired_command_is_refused_with_its_reason(
    idle: Idle, temporal_env: WorkflowEnvironment
) -> None:
    from snapship.messages import StartReplicationRequest

    async with Worker(idle.client, task_queue=idle.cfg.temporal.control_task_queue,
                      workflows=[SourceServerWorkflow]):
        handle = idle.client.get_workflow_handle(idle.workflow_id)
        from temporalio.client import WorkflowUpdateFailedError

        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(
                "start_replication",
                StartReplicationRequest(not_after="2020-01-01T00:00:00+00:00"),
            )
        assert EXPIRED_MESSAGE in str(failed.value.cause)
        # No deadline (the `temporal` CLI path): accepted.
        from snapship.messages import CommandResult

        result = await handle.execute_update(
            "start_replication", StartReplicationRequest(), result_type=CommandResult
        )
        assert result.accepted


async def test_discovery_nobody_runs_is_terminated(
    idle: Idle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discover_cli, "PICKUP_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(discover_cli.DiscoveryNotPickedUp, match="snapship worker"):
        await discover_cli.run_discovery(idle.client, idle.cfg)
    assert time.monotonic() - started < MAX_SECONDS
    info = await idle.client.get_workflow_handle(DISCOVERY_MANUAL_ID).describe()
    assert info.status == WorkflowExecutionStatus.TERMINATED
