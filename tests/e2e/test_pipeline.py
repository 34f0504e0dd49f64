"""End to end on the sandbox: every snapshot group is rebuilt from EBS and compared byte for byte
with the point-in-time content of the VMware snapshot it came from."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.messages import ReplicationCommand
from tests.e2e.harness import runs_ok, sandbox, wait_status
from tests.workflows.history_files import record_history
from workflows.source_server import SourceServerWorkflow

KIB = 1024
MIB = 1024 * KIB


def blocks_touched(writes: list[tuple[int, int]], capacity: int) -> set[int]:
    out: set[int] = set()
    for off, length in writes:
        end = min(off + length, capacity)
        out.update(range(off // EBS_BLOCK_SIZE, (end - 1) // EBS_BLOCK_SIZE + 1))
    return out


async def test_initial_and_incremental_runs_are_byte_identical(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    # Three disks whose sizes are not multiples of 512 KiB.
    disks = [{"capacity_kb": 5 * 1024 + 300}, {"capacity_kb": 3 * 1024 + 1}, {"capacity_kb": 777}]
    async with sandbox(tmp_path, temporal_env, [{"name": "db-01", "disks": disks}]) as sb:
        caps = [d["capacity"] for d in sb.sim.admin.vm("db-01")["disks"]]
        # Guest data before the first run: random data, plus a region left unallocated.
        sb.sim.admin.write("db-01", 0, length=2 * MIB + 123, random_seed=1, disk=0)
        sb.sim.admin.write("db-01", caps[0] - 1000, length=1000, random_seed=2, disk=0)
        sb.sim.admin.write("db-01", 700 * KIB, length=64 * KIB, random_seed=3, disk=1)
        sb.sim.admin.write("db-01", caps[2] - 4096, length=4096, random_seed=4, disk=2)
        handle = await sb.start("db-01")
        st = await wait_status(handle, runs_ok(1), timeout=120)
        assert st.lifecycle_state == "READY_FOR_TEST"
        assert st.data_replication_state == "CONTINUOUS"
        first = st.runs[-1]
        assert sb.verify_group("db-01", st, first) == 3
        assert first.full_sync_disks == 3

        rounds = [
            [(0, 10 * KIB, 0), (3 * MIB + 5, 700 * KIB, 0), (100 * KIB, 1, 1)],
            [(caps[0] - 10, 10, 0), (0, caps[2], 2)],
            [(1 * MIB, 512 * KIB, 0), (2 * MIB, 0, 1)],
        ]
        for n, writes in enumerate(rounds, start=2):
            touched: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
            for i, (off, length, disk) in enumerate(writes):
                if length == 0:
                    # Zeroing data the parent holds must still be shipped (EBS has no trim).
                    sb.sim.admin.write("db-01", off, length=256 * KIB, zero=True, disk=disk)
                    touched[disk] |= blocks_touched([(off, 256 * KIB)], caps[disk])
                else:
                    sb.sim.admin.write(
                        "db-01", off, length=length, random_seed=100 * n + i, disk=disk
                    )
                    touched[disk] |= blocks_touched([(off, length)], caps[disk])
            await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
            st = await wait_status(handle, runs_ok(n), timeout=120)
            run = [r for r in st.runs if r.outcome == "SUCCEEDED"][-1]
            assert sb.verify_group("db-01", st, run) == 3
            # Exactly the blocks the guest touched were shipped, no more.
            assert run.full_sync_disks == 0
            assert run.blocks_changed == sum(len(v) for v in touched.values())
            assert run.blocks_written == run.blocks_changed

        # Nothing of ours is left on the VM after stop.
        await handle.execute_update(SourceServerWorkflow.stop_replication, ReplicationCommand())
        assert sb.sim.admin.vm("db-01")["snapshots"] == []
        await record_history(handle, "sandbox_initial_and_three_incrementals")
