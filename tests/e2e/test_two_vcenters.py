"""Two vCenters (two simulators) in one deployment: both discovered, both replicate, each under
its own cap, every replica byte-identical to its VMware snapshot; removing one keeps its
replicas and adding it back restores its servers' identity.

One worker (4 shipping slots), one local AWS, one Temporal; the second vCenter has its own user,
password, CA, state directory (the stub VDDK serves both through a ':'-list) and a cap different
from the first's, so a cap shared between them, a cap not held by each vCenter's permit
coordinator, or one vCenter's credentials used for the other, fails. Caps are measured at the
far end: each simulator's count of VMs under a VMware snapshot at once.
It is added (as `snapship vcenter add` adds it) while the worker runs, which must pick it up.
"""

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
import worker
from sandbox.aws.testing import start_local_aws
from sandbox.vcsim.testing import SimulatorHandle, start_simulator
from snapship.cli.discover import run_discovery
from snapship.config import ClientConfig, VcenterSettings, source_server_id
from snapship.ebs.groups import describe_group
from snapship.messages import ShipInput, StartReplicationRequest
from snapship.permit_messages import PermitsView, coordinator_id
from snapship.runtime import connect_client
from snapship.secrets import Secret
from snapship.vcenter_admin import (
    AddVcenterRequest,
    UpdateVcenterRequest,
    add_vcenter,
    apply_cap,
    remove_vcenter,
    update_vcenter,
)
from tests.e2e.harness import Sandbox, make_config, runs_ok, scenario, wait_status
from worker import run_worker
from workflows.source_server import SourceServerWorkflow

SECOND_USER = "svc-snapship@berlin.local"
SECOND_PASSWORD = "Berlin-vc-Secret-5521"
CAP_FIRST, CAP_SECOND = 1, 2
WORKER_SLOTS = 4
VMS_FIRST = ["a-web-1", "a-web-2", "a-db-1"]
VMS_SECOND = ["b-app-1", "b-app-2", "b-app-3", "b-app-4"]


class PerVcenterProbe:
    """Copies in flight at once, per vCenter endpoint port (the VDDK server they read from)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.peak_total = 0
        self.ids: dict[int, set[str]] = {}

    @contextmanager
    def shipping(self, port: int, vcenter_id: str) -> Iterator[None]:
        with self.lock:
            self.now[port] = self.now.get(port, 0) + 1
            self.peak[port] = max(self.peak.get(port, 0), self.now[port])
            self.peak_total = max(self.peak_total, sum(self.now.values()))
            self.ids.setdefault(port, set()).add(vcenter_id)
        try:
            yield
        finally:
            with self.lock:
                self.now[port] -= 1


def second_scenario(vms: list[str]) -> dict[str, Any]:
    sc = scenario([{"name": n, "disks": [{"capacity_kb": 1024}]} for n in vms])
    sc["users"] = [{"name": SECOND_USER, "password": SECOND_PASSWORD,
                    "permissions": [{"entity": "/", "role": "Admin"}]}]
    return sc


def add_second(config: Any, sim: SimulatorHandle) -> VcenterSettings:
    """What `snapship vcenter add` does (connection, CA, privileges checked), while the worker
    runs: the worker must pick the new vCenter up without a restart."""
    return add_vcenter(
        config,
        AddVcenterRequest(
            host=sim.host, port=sim.port, user=SECOND_USER, password=Secret(SECOND_PASSWORD),
            ca_path=str(sim.ca_path), name="berlin", shipping_slots=CAP_SECOND,
        ),
    )


async def test_two_vcenters_discovered_replicated_each_under_its_own_cap(
    tmp_path: Path, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = PerVcenterProbe()
    real_shipper = replication.Shipper

    class ProbedShipper(real_shipper):  # type: ignore[misc, valid-type]
        def ship(self, inp: ShipInput, resume: Any = None) -> Any:
            with probe.shipping(self.endpoint.port, inp.vcenter_id):
                return super().ship(inp, resume)

    monkeypatch.setattr(replication, "Shipper", ProbedShipper)
    sim_a = start_simulator(
        scenario([{"name": n, "disks": [{"capacity_kb": 1024}]} for n in VMS_FIRST]),
        tmp_path / "vcenter-a",
    )
    sim_b = start_simulator(second_scenario(VMS_SECOND), tmp_path / "vcenter-b")
    aws = start_local_aws(tmp_path / "aws")
    monkeypatch.setenv("SNAPSHIP_STUB_VDDK_STATE", f"{sim_a.state_dir}:{sim_b.state_dir}")
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        address = temporal_env.client.service_client.config.target_host
        # The worker could ship 4 at once: only the vCenters' own caps may hold them lower.
        config = make_config(tmp_path / "client", sim_a, aws, address, WORKER_SLOTS)
        config.vcenter.instance_uuid = sim_a.simulator.instance_uuid.lower()
        config.vcenter.shipping_slots = CAP_FIRST
        config.save()
        client = await connect_client(config)
        monkeypatch.setattr(worker, "VCENTER_WATCH_S", 0.5)
        task = asyncio.create_task(run_worker(config, stop, metrics=False))
        second = add_second(config, sim_b)
        assert second.instance_uuid == sim_b.simulator.instance_uuid.lower()
        assert sim_a.simulator.instance_uuid != sim_b.simulator.instance_uuid

        # Both discovered, each under its own vCenter's identity.
        first_result = await run_discovery(client, config)
        second_result = await run_discovery(client, config, vc=second)
        assert first_result is not None and second_result is not None
        assert (first_result.upserted, second_result.upserted) == (3, 4)
        assert first_result.vcenter_uuid == config.vcenter.instance_uuid
        assert second_result.vcenter_uuid == second.instance_uuid

        for name in VMS_FIRST:
            sim_a.admin.write(name, 0, length=300_000, random_seed=len(name))
        for name in VMS_SECOND:
            sim_b.admin.write(name, 4096, length=200_000, random_seed=len(name) + 7)
        # Slow block writes, so runs overlap and both caps have to bind.
        aws.admin.set_faults(latency_ms=1500, operations=["PutSnapshotBlock"])
        for sim in (sim_a, sim_b):
            sim.admin.reset_snapshot_census()

        handles: dict[str, Any] = {}
        for sim, names, vc in ((sim_a, VMS_FIRST, config.vcenter), (sim_b, VMS_SECOND, second)):
            for name in names:
                wid = source_server_id(vc.instance_uuid, sim.admin.vm(name)["instance_uuid"])
                handle = client.get_workflow_handle(wid)
                await handle.execute_update(
                    SourceServerWorkflow.start_replication,
                    StartReplicationRequest(interval_seconds=3600),
                )
                handles[name] = handle
        statuses = {
            name: await wait_status(h, runs_ok(1), timeout=240) for name, h in handles.items()
        }
        aws.admin.set_faults()

        # Each under its own cap, at the far end: reached (so it bound) and never exceeded...
        for sim, cap, count in ((sim_a, CAP_FIRST, len(VMS_FIRST)),
                                (sim_b, CAP_SECOND, len(VMS_SECOND))):
            census = sim.admin.snapshot_census()
            assert census["peak_vms"] == cap, census
            assert census["vms_now"] == 0 and census["created_since_reset"] >= count, census
        # ... and not one cap shared by both: the copies of both vCenters overlapped.
        assert probe.peak == {sim_a.port: CAP_FIRST, sim_b.port: CAP_SECOND}, probe.peak
        assert probe.peak_total > max(CAP_FIRST, CAP_SECOND), probe.peak_total
        assert probe.ids == {
            sim_a.port: {config.vcenter.instance_uuid},
            sim_b.port: {second.instance_uuid},
        }
        # Both replicate: every group rebuilt from EBS equals its VMware snapshot, byte for byte.
        for sim, names in ((sim_a, VMS_FIRST), (sim_b, VMS_SECOND)):
            view = Sandbox(sim, aws, config, client)
            for name in names:
                st = statuses[name]
                assert st.lifecycle_state == "READY_FOR_TEST", (name, st.last_error)
                assert view.verify_group(name, st, st.runs[-1]) == 1
            # Nothing left behind in either vCenter.
            for name in names:
                assert sim.admin.vm(name).get("snapshots", []) == [], name

        # Removing the second vCenter while its servers replicate (stopped first) keeps every
        # replica; adding it again brings its servers back under their old identity.
        removed = await remove_vcenter(client, config, "berlin", stop_replication=True)
        assert removed.instance_uuid == second.instance_uuid
        assert ClientConfig.load(Path(config.data_dir)).vcenters == []
        ec2 = Sandbox(sim_b, aws, config, client).aws_clients().ec2
        for name in VMS_SECOND:
            st = await handles[name].query(SourceServerWorkflow.status)
            assert st.data_replication_state == "STOPPED" and not st.replicating, name
            assert st.last_group_id == statuses[name].last_group_id
            group = describe_group(ec2, st.last_group_id)
            assert group is not None and group.complete, name
            assert sim_b.admin.vm(name).get("snapshots", []) == [], name
        again = add_second(config, sim_b)
        rediscovered = await run_discovery(client, config, vc=again)
        assert rediscovered is not None
        assert (rediscovered.upserted, rediscovered.vanished) == (4, 0)
        for name in VMS_SECOND:
            st = await handles[name].query(SourceServerWorkflow.status)
            assert st.last_group_id == statuses[name].last_group_id, name

        # A changed cap reaches the vCenter's running permit coordinator, which owns it.
        update_vcenter(config, config.vcenter.instance_uuid, UpdateVcenterRequest(shipping_slots=3))
        assert "from now on" in await apply_cap(client, config, config.vcenter)
        view = await client.get_workflow_handle(
            coordinator_id(config.vcenter.instance_uuid)
        ).query("permits", result_type=PermitsView)
        assert view.limits.vcenter_vms == 3
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        aws.stop()
        sim_b.stop()
        sim_a.stop()
