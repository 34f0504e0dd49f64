"""vMotion and Storage vMotion against the whole pipeline on the sandbox.

A move *during* a run invalidates that run: its EBS snapshots are discarded, the stored changeIds
stay where they were and the run retries as a new attempt. A move *between* runs is harmless: the
next run is incremental. Every committed group is rebuilt from EBS and compared byte for byte with
the point-in-time image of the VMware snapshot it came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.ebs.groups import describe_group, describe_groups
from snapship.messages import ReplicationCommand, RunRecord, SourceServerStatus
from tests.e2e.harness import Sandbox, runs_ok, sandbox, wait_status
from workflows.source_server import SourceServerWorkflow

MIB = 1024 * 1024
VM = "app-01"
DISKS = [{"capacity_mib": 40}, {"capacity_mib": 9}]
LATENCY_MS = 700
"""Per PutSnapshotBlock while a move is staged: 16 in flight, ~60 blocks -> a few seconds."""
MOVE_DELAY_S = 0.5
RETRY_TIMEOUT_S = 20
"""Discarding attempt 1 and shipping attempt 2 takes a few seconds once latency is off."""


def last_ok(st: SourceServerStatus) -> RunRecord:
    return [r for r in st.runs if r.outcome == "SUCCEEDED"][-1]


def shipping(st: SourceServerStatus) -> bool:
    return st.data_replication_state in ("INITIAL_SYNC", "SHIPPING_SNAPSHOT")


def fill(sb: Sandbox, seed: int) -> None:
    """Enough data that shipping lasts a few seconds under injected latency."""
    sb.sim.admin.write(VM, 0, length=24 * MIB, random_seed=seed, disk=0)
    sb.sim.admin.write(VM, 30 * MIB + 77, length=3 * MIB, random_seed=seed + 1, disk=0)
    sb.sim.admin.write(VM, 1 * MIB, length=4 * MIB + 5, random_seed=seed + 2, disk=1)


def small_writes(sb: Sandbox, seed: int) -> int:
    """A few scattered writes; returns the number of distinct 512 KiB blocks touched."""
    writes = [(0, 5 * MIB + 3, 4096), (0, 39 * MIB, 700 * 1024), (1, 8 * MIB + 100, 10)]
    touched: set[tuple[int, int]] = set()
    for i, (disk, off, length) in enumerate(writes):
        sb.sim.admin.write(VM, off, length=length, random_seed=seed + i, disk=disk)
        end = off + length - 1
        touched.update((disk, b) for b in range(off // EBS_BLOCK_SIZE, end // EBS_BLOCK_SIZE + 1))
    return len(touched)


def snapshot_gone(sb: Sandbox, snapshot_id: str) -> bool:
    """Both EC2 DescribeSnapshots and the local AWS's own view say the snapshot is deleted."""
    ec2 = sb.aws_clients().ec2
    try:
        found = ec2.describe_snapshots(SnapshotIds=[snapshot_id]).get("Snapshots", [])
    except ClientError as err:
        if err.response["Error"]["Code"] != "InvalidSnapshot.NotFound":
            raise
        found = []
    in_admin = any(s["SnapshotId"] == snapshot_id for s in sb.aws.admin.snapshots())
    return not found and not in_admin


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def pending_activities(sb: Sandbox, handle: WorkflowHandle) -> list[str]:
    """What the workflow waits on, with each activity's attempt and last failure (diagnosis)."""
    desc = await handle.describe()
    out = []
    for a in desc.raw_description.pending_activities:
        failure = "no failure"
        if a.HasField("last_failure"):
            # Failures are encrypted by the payload codec: decode them like the Web UI would.
            failure = str(await sb.client.data_converter.decode_failure(a.last_failure))
        out.append(f"{a.activity_type.name} attempt {a.attempt}: {failure}")
    return out


async def run_with_move_midway(
    sb: Sandbox,
    handle: WorkflowHandle,
    run_number: int,
    move: Callable[[], Any],
    landed: Callable[[], bool],
) -> SourceServerStatus:
    """Drive run `run_number` (already triggered) and make the VM move while it ships.

    Returns the status once the run succeeded; asserts the move landed while attempt 1 was still
    shipping, and that attempt 1's EBS snapshots are gone afterwards.
    """
    sid = handle.id
    run_id = f"r{run_number:06d}"
    ec2 = sb.aws_clients().ec2
    await wait_status(handle, shipping, timeout=60)
    # Attempt 1's first EBS snapshot exists from the start of shipping.
    first_group = f"{sid}/{run_id}-a1"
    await wait_until(
        lambda: describe_group(ec2, first_group) is not None, 20, "attempt 1's EBS snapshot"
    )
    # Blocks are counted once stored (after the injected latency): wait for the first ones, so
    # the move lands mid-shipping even on a loaded machine.
    await wait_until(lambda: sb.aws.admin.stats()["put_blocks"] > 0, 30, "the first blocks")
    move()
    await wait_until(landed, 20, "the move to land")
    st = await handle.query(SourceServerWorkflow.status)
    # The move landed mid-shipping: attempt 1 had not yet reached its location check.
    assert shipping(st), st.data_replication_state
    assert not any(run_id in n and "moved" in n for n in st.notes), st.notes
    sb.aws.admin.reset_faults()  # the rest may go fast
    try:
        st = await wait_status(handle, runs_ok(run_number), timeout=RETRY_TIMEOUT_S)
    except AssertionError as err:
        raise AssertionError(
            f"run {run_id} did not complete within {RETRY_TIMEOUT_S}s of the move; "
            f"pending activities: {await pending_activities(sb, handle)}"
        ) from err
    run = last_ok(st)
    assert run.run_id == run_id
    notes = [n for n in st.notes if n.startswith(f"{run_id}:")]
    assert any("moved" in n and "discarded" in n for n in notes), st.notes
    # The committed group is attempt 2's; attempt 1's group has vanished from EC2.
    assert run.group_id == f"{sid}/{run_id}-a2"
    assert describe_group(ec2, first_group) is None
    committed = {s.snapshot_id for g in describe_groups(ec2, sid) for s in g.snapshots}
    shipped_to = set(sb.aws.admin.stats()["put_blocks_by_snapshot"])
    discarded = shipped_to - committed
    assert discarded, "attempt 1 wrote no blocks: the move did not land mid-run"
    for snapshot_id in discarded:
        assert snapshot_gone(sb, snapshot_id), f"{snapshot_id} of the discarded attempt remains"
    assert sb.verify_group(VM, st, run) == len(DISKS)
    assert sb.sim.admin.vm(VM)["snapshots"] == []
    return st


async def next_incremental_run(
    sb: Sandbox, handle: WorkflowHandle, run_number: int, seed: int
) -> SourceServerStatus:
    expected_blocks = small_writes(sb, seed)
    await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
    st = await wait_status(handle, runs_ok(run_number), timeout=60)
    run = last_ok(st)
    assert run.run_id == f"r{run_number:06d}"
    assert run.full_sync_disks == 0
    assert run.blocks_changed == expected_blocks
    assert sb.verify_group(VM, st, run) == len(DISKS)
    return st


async def test_vmotion_during_initial_sync_discards_and_retries(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        fill(sb, 1)
        sb.aws.admin.set_faults(latency_ms=LATENCY_MS, operations=["PutSnapshotBlock"])
        handle = await sb.start(VM)
        st = await run_with_move_midway(
            sb,
            handle,
            1,
            lambda: sb.sim.admin.vmotion(VM, "esx2", delay=MOVE_DELAY_S),
            lambda: sb.sim.admin.vm(VM)["host"] == "esx2",
        )
        assert last_ok(st).full_sync_disks == len(DISKS)
        assert any("host" in n for n in st.notes if n.startswith("r000001:")), st.notes
        await next_incremental_run(sb, handle, 2, seed=50)


async def test_storage_vmotion_during_incremental_run_discards_and_retries(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        sb.sim.admin.write(VM, 0, length=1 * MIB, random_seed=7, disk=0)
        handle = await sb.start(VM)
        await wait_status(handle, runs_ok(1), timeout=60)
        # Run 2 is incremental and carries plenty of changes; the VM's disks move meanwhile.
        fill(sb, 20)
        sb.aws.admin.set_faults(latency_ms=LATENCY_MS, operations=["PutSnapshotBlock"])
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await run_with_move_midway(
            sb,
            handle,
            2,
            lambda: sb.sim.admin.storage_vmotion(VM, "ds2", delay=MOVE_DELAY_S),
            lambda: all(d["datastore"] == "ds2" for d in sb.sim.admin.vm(VM)["disks"]),
        )
        # The retry still ships incrementally from run 1's changeIds, kept through the discard.
        assert last_ok(st).full_sync_disks == 0
        await next_incremental_run(sb, handle, 3, seed=60)


async def test_moves_between_runs_keep_runs_incremental(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        sb.sim.admin.write(VM, 0, length=3 * MIB, random_seed=3, disk=0)
        sb.sim.admin.write(VM, 2 * MIB, length=MIB, random_seed=4, disk=1)
        handle = await sb.start(VM)
        st = await wait_status(handle, runs_ok(1), timeout=60)
        assert sb.verify_group(VM, st, last_ok(st)) == len(DISKS)
        sb.sim.admin.vmotion(VM, "esx2")
        assert sb.sim.admin.vm(VM)["host"] == "esx2"
        await next_incremental_run(sb, handle, 2, seed=30)
        # Storage vMotion renames every disk file: changeIds are keyed by backing UUID.
        before = [d["file"] for d in sb.sim.admin.vm(VM)["disks"]]
        sb.sim.admin.storage_vmotion(VM, "ds2")
        after = [d["file"] for d in sb.sim.admin.vm(VM)["disks"]]
        assert all(a != b for a, b in zip(after, before, strict=True)), (before, after)
        st = await next_incremental_run(sb, handle, 3, seed=40)
        assert not any("moved" in n for n in st.notes), st.notes
        assert all(r.group_id.endswith("-a1") for r in st.runs), st.runs
        assert sb.sim.admin.vm(VM)["snapshots"] == []
