"""A run with nothing changed is a few calls: no VDDK reader process, no disk opened, and still a
complete group that rebuilds byte for byte (an empty EBS snapshot on its parent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import snapship.shipping
from snapship.messages import ReplicationCommand
from tests.e2e.harness import runs_ok, sandbox, wait_status
from workflows.source_server import SourceServerWorkflow

MIB = 1024 * 1024


async def test_a_run_with_nothing_changed_opens_no_disk(
    tmp_path: Path, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real = snapship.shipping.DiskReader

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(kwargs.get("disk_path", "")))
        return real(*args, **kwargs)

    monkeypatch.setattr(snapship.shipping, "DiskReader", counting)
    vm = {"name": "quiet-01", "disks": [{"capacity_mib": 4}, {"capacity_mib": 2}]}
    async with sandbox(tmp_path, temporal_env, [vm]) as sb:
        sb.sim.admin.write("quiet-01", 0, length=3 * MIB, random_seed=7, disk=0)
        sb.sim.admin.write("quiet-01", MIB, length=MIB, random_seed=8, disk=1)
        handle = await sb.start("quiet-01")
        st = await wait_status(handle, runs_ok(1), timeout=120)
        assert len(opened) == 2  # the first sync reads both disks

        # Only the second disk changes: the first is not opened.
        sb.sim.admin.write("quiet-01", 0, length=4096, random_seed=9, disk=1)
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await wait_status(handle, runs_ok(2), timeout=120)
        second = st.runs[-1]
        assert second.blocks_changed == 1 and len(opened) == 3
        assert sb.verify_group("quiet-01", st, second) == 2

        # Nothing changed: no disk is opened, and the group is still whole.
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await wait_status(handle, runs_ok(3), timeout=120)
        third = st.runs[-1]
        assert third.blocks_changed == 0 and third.bytes_shipped == 0
        assert len(opened) == 3
        assert third.group_id != second.group_id
        assert sb.verify_group("quiet-01", st, third) == 2
        await handle.execute_update(SourceServerWorkflow.stop_replication, ReplicationCommand())
        assert sb.sim.admin.vm("quiet-01")["snapshots"] == []
