"""The worker dies after EBS accepted CompleteSnapshot and before the checkpoint saying so was
recorded: the retried ship attempt finds the sealed snapshot, writes nothing into it (it would
be refused: "not pending (completion was requested)") and the group completes byte-identical."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.e2e.harness import runs_ok, sandbox, wait_status
from tests.e2e.kills import WorkerProcess

MIB = 1024 * 1024
DISK_MIB = 16


@pytest.mark.slow
async def test_kill_between_complete_snapshot_and_checkpoint_finishes_without_writing(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "seal-01", "disks": [{"capacity_mib": DISK_MIB}]}
    async with sandbox(tmp_path, temporal_env, [vm], run_worker_inline=False) as sb:
        sb.sim.admin.write("seal-01", 0, length=DISK_MIB * MIB, random_seed=5)
        # CompleteSnapshot takes effect at once; its answer never reaches the doomed worker.
        sb.aws.admin.set_faults(respond_after_seconds={"CompleteSnapshot": 120})
        worker = WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / "worker.log")
        worker.start()
        try:
            handle = await sb.start("seal-01")
            deadline = time.monotonic() + 120
            while sb.aws.admin.stats()["requests"].get("CompleteSnapshot", 0) < 1:
                assert worker.alive(), worker.tail()
                assert time.monotonic() < deadline, "shipping never reached CompleteSnapshot"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the seal is requested; the answer is being held
            puts_at_kill = sb.aws.admin.stats()["put_blocks"]
            worker.kill()
            sb.aws.admin.set_faults(respond_after_seconds={})
            worker.start()
            st = await wait_status(handle, runs_ok(1), timeout=180)
        finally:
            worker.stop()
        stats = sb.aws.admin.stats()
        assert stats["put_blocks"] == puts_at_kill, "the retry wrote blocks again"
        refused = {k: v for k, v in stats.get("errors", {}).items() if "PutSnapshotBlock" in k}
        assert not refused, refused
        assert st.runs[-1].outcome == "SUCCEEDED" and len(st.runs) == 1
        assert sb.verify_group("seal-01", st, st.runs[-1]) == 1
        assert sb.sim.admin.vm("seal-01")["snapshots"] == []
