"""The worker dies after EBS accepted CompleteSnapshot and before the checkpoint saying so was
recorded: the retried ship attempt finds the sealed snapshot, writes nothing into it (it would
be refused: "not pending (completion was requested)") and the group completes byte-identical."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.shipping import ShipCheckpoint
from tests.e2e.harness import runs_ok, sandbox, wait_status
from tests.e2e.kills import WorkerProcess
from tests.e2e.shipping_run import Run

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


class _SealLandsAfterTheFirstLook:
    """EC2 for the retry: its first look at the snapshot comes before the stalled attempt's
    seal (no completion mark yet); every later look sees what EC2 has."""

    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2
        self.looks = 0

    def describe_snapshots(self, **kwargs: Any) -> Any:
        self.looks += 1
        answer = self._ec2.describe_snapshots(**kwargs)
        if self.looks == 1:
            for snap in answer.get("Snapshots", []):
                snap["Tags"], snap["State"] = [], "pending"
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)


async def test_a_retry_whose_snapshot_is_sealed_while_it_writes_finishes_without_error(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    """A stalled attempt comes back and seals the disk's snapshot while its retry, resumed from
    an older heartbeat, is writing into it (a CI run met this: the retry's next put was refused
    "not pending" and the run failed). The retry finds the seal and reports the disk done."""
    vm = {"name": "race-01", "disks": [{"capacity_mib": 8}]}
    async with sandbox(tmp_path, temporal_env, [vm]) as sb:
        sb.sim.admin.write("race-01", 0, length=8 * MIB, random_seed=31)
        run = Run(sb, "race-01", "r000001")
        try:
            seen: list[ShipCheckpoint] = []
            stalled = run.shipper(on_checkpoint=lambda cp: seen.append(copy.deepcopy(cp)))
            sealed = stalled.ship(run.ship_input)
            early = next(cp for cp in seen if cp.in_progress)  # before its first block
            retry = run.shipper()
            retry.ec2 = _SealLandsAfterTheFirstLook(retry.ec2)
            results = retry.ship(run.ship_input, early)
            assert [r.ebs_snapshot_id for r in results] == [r.ebs_snapshot_id for r in sealed]
            assert results[0].bytes_shipped == 0  # the refused put was the only write tried
            run.verify({r.device_key: r.ebs_snapshot_id for r in results})
        finally:
            run.remove_snapshot()
