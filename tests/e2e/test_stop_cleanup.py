"""stop and pause around snapshot creation and removal: nothing of snapship stays on the VM,
`stop` says so only after checking, and a worker killed mid-removal does not make them hang."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.messages import CommandResult, ReplicationCommand
from tests.e2e.harness import runs_ok, sandbox, wait_status
from tests.e2e.kills import WorkerProcess, wait_started
from workflows.activity_options import CONTROL_HEARTBEAT
from workflows.source_server import SourceServerWorkflow

MIB = 1024 * 1024
CREATE_S = 6.0
REMOVE_S = 8.0
CHECKED = "checked: no snapshot of snapship remains on the VM"


@pytest.mark.slow
async def test_stop_during_snapshot_creation_leaves_none_and_says_so_after_checking(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "stop-01", "disks": [{"capacity_mib": 8}], "cbt": True}
    async with sandbox(tmp_path, temporal_env, [vm], run_worker_inline=False) as sb:
        worker = WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / "worker.log")
        worker.start()
        try:
            sb.sim.admin.delay_tasks("CreateSnapshot", CREATE_S)
            handle = await sb.start("stop-01")
            await wait_started(handle, "snapship.create_snapshot", worker)
            t0 = time.monotonic()
            result: CommandResult = await handle.execute_update(
                SourceServerWorkflow.stop_replication, ReplicationCommand()
            )
            took = time.monotonic() - t0
            at_answer = sb.sim.admin.vm("stop-01")["snapshots"]
            await asyncio.sleep(CREATE_S + 1)  # any create still running has ended by now
            later = sb.sim.admin.vm("stop-01")["snapshots"]
        finally:
            worker.stop()
        print(f"\nstop during create answered in {took:.1f}s: {result.message}")
        assert CHECKED in result.message
        assert at_answer == [] and later == []
        assert took < CREATE_S + 2 * CONTROL_HEARTBEAT.total_seconds()


@pytest.mark.slow
async def test_kill_during_snapshot_removal_pause_and_stop_answer_within_seconds(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "stop-02", "disks": [{"capacity_mib": 8}], "cbt": True}
    async with sandbox(tmp_path, temporal_env, [vm], run_worker_inline=False) as sb:
        sb.sim.admin.write("stop-02", 0, length=8 * MIB, random_seed=3)
        worker = WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / "worker.log")
        worker.start()
        try:
            sb.sim.admin.delay_tasks("RemoveSnapshot", REMOVE_S)
            handle = await sb.start("stop-02")
            await wait_started(handle, "snapship.remove_snapshot", worker)
            worker.restart_after_kill()
            t0 = time.monotonic()
            paused: CommandResult = await handle.execute_update(
                SourceServerWorkflow.pause_replication, ReplicationCommand()
            )
            pause_took = time.monotonic() - t0
            sb.sim.admin.delay_tasks("RemoveSnapshot", 0)
            after_pause = sb.sim.admin.vm("stop-02")["snapshots"]
            await handle.execute_update(
                SourceServerWorkflow.resume_replication, ReplicationCommand()
            )
            await wait_status(handle, runs_ok(1), timeout=120)
            t0 = time.monotonic()
            stopped: CommandResult = await handle.execute_update(
                SourceServerWorkflow.stop_replication, ReplicationCommand()
            )
            stop_took = time.monotonic() - t0
            after_stop = sb.sim.admin.vm("stop-02")["snapshots"]
        finally:
            worker.stop()
        print(f"\npause after a kill mid-removal: {pause_took:.1f}s; stop: {stop_took:.1f}s")
        # The removal's retry comes after one heartbeat timeout; it waits for the removal task
        # the dead worker started instead of failing on it.
        bound = REMOVE_S + CONTROL_HEARTBEAT.total_seconds() + 15
        assert pause_took < bound, f"pause took {pause_took:.1f}s"
        assert stop_took < bound, f"stop took {stop_took:.1f}s"
        assert after_pause == [] and after_stop == []
        assert CHECKED in stopped.message
        assert "paused" in paused.message
