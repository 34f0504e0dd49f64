"""60 VMs at once against a cap of 50 shipping slots: measured, not assumed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import activities.replication as replication
from snapship.config import ClientConfig
from tests.e2e.harness import sandbox
from workflows.source_server import SourceServerWorkflow

VMS = 60
CAP = 50


class ConcurrencyProbe:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    @contextmanager
    def slot(self, metrics: Any = None) -> Iterator[None]:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.slow
async def test_sixty_vms_never_more_than_fifty_ship(
    tmp_path: Path, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = ConcurrencyProbe()
    monkeypatch.setattr(replication, "shipping_slot", probe.slot)
    vms = [{"name": f"app-{i:02d}", "disks": [{"capacity_kb": 1024}]} for i in range(VMS)]
    def only_the_vcenter_cap(config: ClientConfig) -> None:
        # All 60 VMs sit on one host and one datastore: without this, the default per-host
        # (8 disks) and per-datastore (15) caps would bind first.
        config.replication.host_disk_cap = 0
        config.replication.datastore_disk_cap = 0

    async with sandbox(
        tmp_path, temporal_env, vms, shipping_slots=CAP, tune=only_the_vcenter_cap
    ) as sb:
        sb.sim.admin.reset_snapshot_census()
        for vm in vms:
            sb.sim.admin.write(vm["name"], 0, length=4096, random_seed=len(vm["name"]))
        # Each PutSnapshotBlock takes a while, so shipping overlaps and the cap has to bind: the
        # first wave's blocks are held long enough for 50 VMs to reach shipping on a loaded
        # machine (15 s was not), and under the client's 60 s read timeout. Once the cap has
        # bound the latency goes (below), so the VMs that waited ship at once.
        sb.aws.admin.set_faults(latency_ms=45000, operations=["PutSnapshotBlock"])
        gate = asyncio.Semaphore(10)

        async def start(name: str) -> Any:
            async with gate:
                return await sb.start(name)

        handles = await asyncio.gather(*(start(vm["name"]) for vm in vms))
        pending_seen: set[str] = set()
        mine = f"WorkflowId STARTS_WITH '{sb.id_prefix()}'"

        async def count(where: str) -> int:
            return (await sb.client.count_workflows(f"{mine} AND {where}")).count

        async def watch() -> None:
            # The console's view (search attributes), not 60 queries a second.
            while True:
                async for wf in sb.client.list_workflows(
                    f"{mine} AND SnapshipDataReplicationState = 'PENDING_SNAPSHOT_SHIPPING'"
                ):
                    pending_seen.add(wf.id)
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        try:
            deadline = asyncio.get_running_loop().time() + 600
            slow = True
            while await count("SnapshipLifeCycleState = 'READY_FOR_TEST'") < VMS:
                assert asyncio.get_running_loop().time() < deadline, "VMs did not all replicate"
                if slow and probe.peak >= CAP and pending_seen:
                    # The cap has bound and VMs were seen waiting for it: what is left to ship
                    # (the VMs that waited) need not wait 45 s per block any more.
                    sb.aws.admin.set_faults(latency_ms=0)
                    slow = False
                await asyncio.sleep(0.5 if slow else 1)
        finally:
            watcher.cancel()
        states = await asyncio.gather(*(h.query(SourceServerWorkflow.status) for h in handles))
        assert all(s.lifecycle_state == "READY_FOR_TEST" for s in states)
        # At the far end: VMs under a VMware snapshot at once, as the simulator counts them.
        census = sb.sim.admin.snapshot_census()
        assert census["peak_vms"] == CAP, census
        assert probe.peak <= CAP, f"{probe.peak} VMs shipped at once"
        assert probe.peak == CAP, f"the cap never bound (peak {probe.peak}); test is too weak"
        assert pending_seen, "no VM was ever seen waiting for a shipping slot"
