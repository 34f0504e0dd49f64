"""Everything that forces a full resync, and what must not: on the whole pipeline, end to end.

A disk whose CBT history is lost (FileFault from QueryChangedDiskAreas, a CBT reset, a hard
power-off) or whose capacity changed starts a new EBS chain: its snapshot has no parent and every
allocated block is shipped again. The other disks of the VM stay incremental. Every committed
group is rebuilt from EBS and compared byte for byte with the VMware snapshot it came from.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.ebs.groups import describe_group
from snapship.messages import ReplicationCommand, RunRecord, SourceServerStatus
from tests.e2e.harness import Sandbox, runs_ok, sandbox, wait_status
from workflows.source_server import SourceServerWorkflow

KIB = 1024
MIB = 1024 * KIB
VM = "db-01"
DISKS = [{"capacity_mib": 6}, {"capacity_kb": 3 * 1024 + 64}]


def last_ok(st: SourceServerStatus) -> RunRecord:
    return [r for r in st.runs if r.outcome == "SUCCEEDED"][-1]


def blocks(off: int, length: int) -> set[int]:
    return set(range(off // EBS_BLOCK_SIZE, (off + length - 1) // EBS_BLOCK_SIZE + 1))


class Guest:
    """Guest writes that remember which 512 KiB blocks of which disk (by key) they touched."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.touched: dict[int, set[int]] = {}
        self.seed = 0

    def write(self, key: int, off: int, length: int) -> None:
        self.seed += 1
        self.sb.sim.admin.write(VM, off, length=length, random_seed=self.seed, disk=key)
        self.touched.setdefault(key, set()).update(blocks(off, length))

    def take(self) -> dict[int, set[int]]:
        """Blocks touched since the last take (what the next incremental run must ship)."""
        out = self.touched
        self.touched = {}
        return out


class Chains:
    """Per device key, every block ever written: a full resync ships exactly these."""

    def __init__(self) -> None:
        self.ever: dict[int, set[int]] = {}

    def add(self, touched: dict[int, set[int]]) -> None:
        for k, v in touched.items():
            self.ever.setdefault(k, set()).update(v)


def disk_keys(sb: Sandbox) -> list[int]:
    return [int(d["key"]) for d in sb.sim.admin.vm(VM)["disks"]]


def group_parents(sb: Sandbox, run: RunRecord) -> dict[int, str | None]:
    """deviceKey -> ParentSnapshotId of that disk's EBS snapshot in the run's group."""
    group = describe_group(sb.aws_clients().ec2, run.group_id)
    assert group is not None
    return {
        s.tags.device_key: sb.aws.admin.snapshot(s.snapshot_id)["ParentSnapshotId"]
        for s in group.by_device_key()
    }


def group_ids(sb: Sandbox, run: RunRecord) -> dict[int, str]:
    group = describe_group(sb.aws_clients().ec2, run.group_id)
    assert group is not None
    return {s.tags.device_key: s.snapshot_id for s in group.by_device_key()}


async def run_now(
    sb: Sandbox, handle: WorkflowHandle, n_ok: int, timeout: float = 60
) -> tuple[SourceServerStatus, RunRecord]:
    await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
    st = await wait_status(handle, runs_ok(n_ok), timeout=timeout)
    run = last_ok(st)
    assert sb.verify_group(VM, st, run) == len(disk_keys(sb))
    assert sb.sim.admin.vm(VM)["snapshots"] == []
    return st, run


def check_chains(
    sb: Sandbox,
    run: RunRecord,
    previous: RunRecord,
    full: set[int],
) -> None:
    """Disks in `full` start new chains (no parent); the others continue `previous`'s."""
    parents = group_parents(sb, run)
    before = group_ids(sb, previous) if previous.group_id else {}
    for key, parent in parents.items():
        if key in full:
            assert parent is None, f"disk {key} resynced but has parent {parent}"
        else:
            assert parent == before[key], f"disk {key}: parent {parent}, want {before.get(key)}"
    assert run.full_sync_disks == len(full)


async def first_run(sb: Sandbox) -> tuple[WorkflowHandle, Guest, Chains, RunRecord]:
    guest = Guest(sb)
    keys = disk_keys(sb)
    guest.write(keys[0], 0, 2 * MIB + 5)
    guest.write(keys[0], 5 * MIB, 64 * KIB)
    guest.write(keys[1], 1 * MIB, 300 * KIB)
    chains = Chains()
    chains.add(guest.take())
    handle = await sb.start(VM)
    st = await wait_status(handle, runs_ok(1), timeout=60)
    run = last_ok(st)
    assert run.full_sync_disks == len(keys)
    assert sb.verify_group(VM, st, run) == len(keys)
    return handle, guest, chains, run


async def test_changed_areas_filefault_resyncs_that_disk(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        handle, guest, chains, first = await first_run(sb)
        k0, k1 = disk_keys(sb)
        guest.write(k0, 3 * MIB, 10)
        guest.write(k1, 0, 4 * KIB)
        touched = guest.take()
        chains.add(touched)
        # Disk k0's QueryChangedDiskAreas answers FileFault (the disks ship at once, so which
        # disk asks first is not fixed: the fault names its disk).
        sb.sim.admin.qcda_filefault(1, device_key=k0)
        _st, run = await run_now(sb, handle, 2)
        check_chains(sb, run, first, full={k0})
        assert run.blocks_changed == len(chains.ever[k0]) + len(touched[k1])
        # The new chain continues incrementally.
        guest.write(k0, 4 * MIB, 1)
        touched = guest.take()
        chains.add(touched)
        _, run3 = await run_now(sb, handle, 3)
        check_chains(sb, run3, run, full=set())
        assert run3.blocks_changed == 1


async def test_cbt_reset_and_hard_power_off_resync_everything(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        handle, guest, chains, first = await first_run(sb)
        k0, k1 = disk_keys(sb)
        # CBT reset by the administrator (e.g. a restore or a manual disable/enable).
        guest.write(k0, 1 * MIB, 100)
        chains.add(guest.take())
        sb.sim.admin.cbt(VM, new_epoch=True)
        _st, run = await run_now(sb, handle, 2)
        check_chains(sb, run, first, full={k0, k1})
        assert run.blocks_changed == len(chains.ever[k0]) + len(chains.ever[k1])
        # Hard power-off loses CBT state too; the VM replicates while powered off.
        guest.write(k1, 2 * MIB, 8 * KIB)
        chains.add(guest.take())
        assert sb.sim.admin.power(VM, "hard-off") == "poweredOff"
        _st, run3 = await run_now(sb, handle, 3)
        check_chains(sb, run3, run, full={k0, k1})
        assert run3.blocks_changed == len(chains.ever[k0]) + len(chains.ever[k1])
        # Powered on again: a plain power-on keeps the epoch, so the next run is incremental.
        assert sb.sim.admin.power(VM, "on") == "poweredOn"
        guest.write(k0, 0, 4 * KIB)
        guest.write(k1, 3 * MIB, 64 * KIB)
        touched = guest.take()
        _, run4 = await run_now(sb, handle, 4)
        check_chains(sb, run4, run3, full=set())
        assert run4.blocks_changed == len(touched[k0]) + len(touched[k1])


async def test_extended_disk_resyncs_alone(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        handle, guest, chains, first = await first_run(sb)
        k0, k1 = disk_keys(sb)
        sb.sim.admin.extend_disk(VM, k1, capacity_kb=7 * 1024 + 17)
        assert sb.sim.admin.vm(VM)["disks"][1]["capacity"] == (7 * 1024 + 17) * KIB
        # Data in the new tail, up to the very last byte, and a change on the other disk.
        guest.write(k1, 7 * MIB, 17 * KIB)
        guest.write(k1, 5 * MIB, 4 * KIB)
        guest.write(k0, 2 * MIB, 4 * KIB)
        touched = guest.take()
        chains.add(touched)
        _st, run = await run_now(sb, handle, 2)
        check_chains(sb, run, first, full={k1})
        assert run.blocks_changed == len(touched[k0]) + len(chains.ever[k1])
        group = describe_group(sb.aws_clients().ec2, run.group_id)
        assert group is not None
        sizes = {s.tags.device_key: s.volume_size_gib for s in group.snapshots}
        assert sizes == {k0: 1, k1: 1}
        # After the resync the extended disk is incremental again.
        guest.write(k1, 6 * MIB, 1)
        touched = guest.take()
        _, run3 = await run_now(sb, handle, 3)
        check_chains(sb, run3, run, full=set())
        assert run3.blocks_changed == 1


async def test_added_and_removed_disks(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        handle, guest, chains, first = await first_run(sb)
        k0, k1 = disk_keys(sb)
        k2 = sb.sim.admin.add_disk(VM, capacity_kb=2 * 1024 + 5)
        assert disk_keys(sb) == [k0, k1, k2]
        guest.write(k2, 0, 100 * KIB)
        guest.write(k2, 2 * MIB, 5 * KIB)
        guest.write(k0, 0, 1)
        touched = guest.take()
        chains.add(touched)
        st, run = await run_now(sb, handle, 2)
        assert run.full_sync_disks == 1
        parents = group_parents(sb, run)
        assert set(parents) == {k0, k1, k2}
        assert parents[k2] is None
        before = group_ids(sb, first)
        assert parents[k0] == before[k0] and parents[k1] == before[k1]
        assert run.blocks_changed == len(touched[k0]) + len(touched[k2])
        # Remove disk k1: the next group holds the remaining two disks; a note says why.
        removed_id = group_ids(sb, run)[k1]
        sb.sim.admin.remove_disk(VM, k1)
        guest.write(k2, 1 * MIB, 3)
        touched = guest.take()
        st, run3 = await run_now(sb, handle, 3)
        assert set(group_ids(sb, run3)) == {k0, k2}
        check_chains(sb, run3, run, full=set())
        assert run3.blocks_changed == len(touched[k2])
        notes = [n for n in st.notes if n.startswith("r000003:")]
        assert any(f"disk {k1}" in n and "removed" in n and removed_id in n for n in notes), (
            st.notes
        )
        # The removed disk's last replica is still there, in the previous group.
        group = describe_group(sb.aws_clients().ec2, run.group_id)
        assert group is not None and group.complete


async def test_foreign_snapshot_blocks_run_until_removed(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        handle, guest, _chains, first = await first_run(sb)
        k0, k1 = disk_keys(sb)
        guest.write(k0, 1 * MIB, 10)
        user = sb.sim.admin.create_snapshot(VM, "before-upgrade")
        guest.write(k1, 2 * MIB, 10)
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await wait_status(
            handle, lambda s: s.runs[-1].run_id == "r000002" and s.runs[-1].outcome == "FAILED"
        )
        assert st.last_error.startswith("r000002: ")
        assert "ineligible" in st.last_error.lower(), st.last_error
        assert "before-upgrade" in st.last_error and "snapshot" in st.last_error.lower()
        assert st.data_replication_state == "STALLED"
        assert st.lifecycle_state == "READY_FOR_TEST"
        # The last good group is kept and still the replication point.
        assert st.last_group_id == first.group_id
        group = describe_group(sb.aws_clients().ec2, first.group_id)
        assert group is not None and group.complete
        assert sb.verify_group(VM, st, first) == 2
        # Nothing of ours was left on the VM; the user's snapshot is untouched.
        assert [s["name"] for s in sb.sim.admin.vm(VM)["snapshots"]] == ["before-upgrade"]
        # The user deletes the snapshot: the next run succeeds, incrementally, with both writes.
        sb.sim.admin.remove_snapshot(VM, user["moref"])
        touched = guest.take()
        st, run = await run_now(sb, handle, 2)
        assert run.run_id == "r000003"
        check_chains(sb, run, first, full=set())
        assert run.blocks_changed == len(touched[k0]) + len(touched[k1])
        assert st.last_error == ""
        assert st.data_replication_state == "CONTINUOUS"
