"""A worker that stops answering for longer than the ship's heartbeat timeout (SIGSTOP: a VM
paused by its hypervisor, swap storms, a 50-VM overload of 2 cores), then goes on: the server
has timed the attempt out and a retry resumes from the last heartbeat, so the stalled attempt
must leave its EBS snapshots alone (it deleted them, and the retry found them gone)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.blocks import EBS_BLOCK_SIZE
from tests.e2e.harness import runs_ok, sandbox, wait_status
from tests.e2e.kills import WorkerProcess
from tests.e2e.test_crash_restart import puts, slow_small_window
from workflows.activity_options import TIMEOUTS

MIB = 1024 * 1024
DISK_MIB = 64
BLOCKS = DISK_MIB * MIB // EBS_BLOCK_SIZE


@pytest.mark.slow
async def test_a_stalled_worker_past_the_heartbeat_timeout_keeps_the_snapshots_it_resumes(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "stall-01", "disks": [{"capacity_mib": DISK_MIB}]}
    async with sandbox(
        tmp_path, temporal_env, [vm], run_worker_inline=False, tune=slow_small_window
    ) as sb:
        sb.sim.admin.write("stall-01", 0, length=DISK_MIB * MIB, random_seed=21)
        sb.aws.admin.set_faults(latency_ms=400, operations=["PutSnapshotBlock"])  # ~20 blocks/s
        worker = WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / "worker.log")
        worker.start()
        try:
            handle = await sb.start("stall-01")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while await puts(sb) < BLOCKS // 4:
                assert worker.alive(), worker.tail()
                assert loop.time() < deadline, "shipping never got going"
                await asyncio.sleep(0.2)
            assert worker.proc is not None
            os.kill(worker.proc.pid, signal.SIGSTOP)
            try:
                heartbeat = TIMEOUTS["snapship.ship"]["heartbeat_timeout"].total_seconds()
                await asyncio.sleep(heartbeat + 8)  # the server times the attempt out
            finally:
                os.kill(worker.proc.pid, signal.SIGCONT)
            sb.aws.admin.set_faults(latency_ms=0)
            st = await wait_status(handle, runs_ok(1), timeout=240)
        finally:
            worker.stop()
        assert sb.verify_group("stall-01", st, st.runs[-1]) == 1
        # The retry wrote into the snapshot the stalled attempt had started: one, not two.
        assert len(sb.aws.admin.snapshots()) == 1, sb.aws.admin.snapshots()
        assert sb.sim.admin.vm("stall-01")["snapshots"] == []
