"""A VM's disks ship at the same time: byte-identical, one checkpoint per disk, and a retried
attempt resumes every disk that was in flight from its own cursor.

Drives the shipping library (the code the ship activity runs) against the simulator, the stub
VDDK and local AWS, without a workflow, so an attempt can be interrupted at an observed point.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.config import ClientConfig
from snapship.ebs.client import EbsCallError
from snapship.ebs.writer import UploadCancelled
from snapship.shipping import ShipCheckpoint
from tests.e2e.harness import Sandbox, sandbox
from tests.e2e.shipping_run import Run

MIB = 1024 * 1024
DISKS = 4
DISK_MIB = 8
IN_FLIGHT = 2
LATENCY_MS = 30  # with 2 in flight a disk takes >= 16 x 30 ms / 2: long enough to overlap


def small_windows(config: ClientConfig) -> None:
    config.replication.ebs_concurrency = IN_FLIGHT
    config.replication.checkpoint_every_blocks = 1


def fill_disks(sb: Sandbox, vm: str) -> None:
    for disk in range(DISKS):
        # Leave a hole in each disk so zero blocks are skipped per disk as well.
        sb.sim.admin.write(vm, 0, length=3 * MIB, random_seed=10 + disk, disk=disk)
        sb.sim.admin.write(vm, 5 * MIB, length=3 * MIB, random_seed=20 + disk, disk=disk)


def four_disk_vm(name: str) -> dict[str, Any]:
    return {"name": name, "disks": [{"capacity_mib": DISK_MIB} for _ in range(DISKS)]}


@pytest.mark.slow
async def test_disks_ship_at_once_and_an_interrupted_attempt_resumes_each_disk(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(
        tmp_path, temporal_env, [four_disk_vm("multi-01")], run_worker_inline=False,
        tune=small_windows,
    ) as sb:
        fill_disks(sb, "multi-01")
        sb.aws.admin.set_faults(latency_ms=LATENCY_MS)
        run = Run(sb, "multi-01", "r1")
        try:
            # Attempt 1: stop once two disks have stored blocks at the same time.
            beats: list[dict[str, Any]] = []
            cancel = threading.Event()

            def on_checkpoint(cp: ShipCheckpoint) -> None:
                beats.append(cp.to_dict())
                stored = [d for d in cp.in_progress if d.writer and d.writer["cursor"] > 0]
                if len(stored) >= 2:
                    cancel.set()

            with pytest.raises(UploadCancelled):
                run.shipper(on_checkpoint, cancel, DISKS).ship(run.ship_input)
            at_once = [
                b for b in map(ShipCheckpoint.from_dict, beats)
                if sum(1 for d in b.in_progress if d.writer and d.writer["cursor"] > 0) >= 2
            ]
            assert at_once, "disks did not ship at the same time"
            last = ShipCheckpoint.from_dict(beats[-1])
            moving = [d for d in last.in_progress if d.writer and d.writer["cursor"] > 0]
            # A disk may finish between the cancel and its next look at it (its reader sends a
            # slot of blocks at once): then it is done, and the retry must not ship it again.
            finished = {d.device_key: d for d in last.done}
            assert moving, "the cancel interrupted no disk in the middle of its upload"
            assert len(moving) + len(finished) >= 2
            assert len({d.device_key for d in last.in_progress}) == len(last.in_progress)

            # Attempt 2 (a retry gets the last heartbeat): every disk resumes from its cursor.
            sb.aws.admin.set_faults(latency_ms=0)
            shipper = run.shipper(disks_in_parallel=DISKS)
            second = shipper.ship(run.ship_input, last)
            # The VM's window is shared by its disks (here: 2 calls over 4 disks), not multiplied.
            assert shipper.disk_settings.max_in_flight == 1
            assert [d.device_key for d in second] == [p.device_key for p in run.ship_input.disks]
            by_key = {d.device_key: d for d in second}
            for d in moving:
                assert d.writer is not None
                result = by_key[d.device_key]
                # Blocks below the cursor were hashed, not sent again; snapshot ids are kept.
                assert result.resumed_blocks > 0
                assert result.ebs_snapshot_id == d.writer["snapshot_id"]
            for key, done in finished.items():  # reported again, not shipped again
                assert by_key[key].ebs_snapshot_id == done.ebs_snapshot_id
                assert by_key[key].bytes_shipped == done.bytes_shipped
            for result in second:
                assert result.blocks_changed == 12  # 6 MiB of data in 512 KiB blocks
                assert result.zero_blocks_skipped == 0
            run.verify({d.device_key: d.ebs_snapshot_id for d in second})
        finally:
            run.remove_snapshot()


@pytest.mark.slow
async def test_one_disks_permanent_failure_stops_its_siblings_and_is_what_fails(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(
        tmp_path, temporal_env, [four_disk_vm("multi-02")], run_worker_inline=False,
        tune=small_windows,
    ) as sb:
        fill_disks(sb, "multi-02")
        sb.aws.admin.set_faults(
            latency_ms=LATENCY_MS,
            fail_next=[{"operation": "PutSnapshotBlock", "code": "ValidationException",
                        "reason": "INVALID_BLOCK", "count": 1}],
        )
        run = Run(sb, "multi-02", "r1")
        try:
            beats: list[ShipCheckpoint] = []
            with pytest.raises(EbsCallError) as info:
                run.shipper(beats.append, disks_in_parallel=DISKS).ship(run.ship_input)
            assert info.value.code == "ValidationException"
            stored = sb.aws.admin.stats()["put_blocks"]
            # The siblings stopped at their next block instead of shipping their whole disks.
            assert stored < DISKS * 12
            assert not beats[-1].done or len(beats[-1].done) < DISKS
        finally:
            run.remove_snapshot()
