"""Discovery against the vSphere simulator: eligibility reasons, exclusions, identity, vanishing.

The library part reads the simulator's inventory through the real pyvmomi session; the workflow
part runs DiscoveryWorkflow + its activity and the lead's SourceServerWorkflow on the embedded
Temporal server, exactly as the worker registers them.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.discovery import DiscoveryActivities
from snapship.cli.discover import ensure_discovery_schedule, run_discovery
from snapship.config import ClientConfig, VcenterSettings, source_server_id
from snapship.discovery import scan_vcenter
from snapship.messages import SourceServerStatus
from snapship.vcenters import find_vcenter
from snapship.vsphere.session import VcenterSession
from workflows.discovery import DISCOVERY_SCHEDULE_ID, DiscoveryWorkflow
from workflows.source_server import SourceServerWorkflow

ADMIN = "administrator@vsphere.local"
PASSWORD = "Discovery-pw!"
CLIENT_UUID = "5003a1b2-c3d4-e5f6-0718-293a4b5c6d7e"
DISK = {"capacity_mib": 4}

SCENARIO: dict[str, Any] = {
    "vcenter": {"version": "7.0"},
    "users": [{"name": ADMIN, "password": PASSWORD,
               "permissions": [{"entity": "/", "role": "Admin"}]}],
    "datacenters": [{
        "name": "dc1",
        "datastores": [{"name": "ds1", "type": "VMFS"}, {"name": "vvol1", "type": "VVOL"}],
        "clusters": [{"name": "cl1", "hosts": ["esx1", "esx2"]}],
        "vms": [
            {"name": "web-01", "disks": [DISK, DISK], "cbt": True, "guest_id": "ubuntu64Guest",
             "cpus": 2, "memory_mb": 4096, "firmware": "efi"},
            {"name": "web-02", "disks": [DISK], "power": "poweredOff"},
            {"name": "db-01", "disks": [DISK], "snapshots": ["before-upgrade"]},
            {"name": "legacy-01", "disks": [DISK], "hardware_version": "vmx-04"},
            {"name": "rdm-01", "disks": [DISK, {"capacity_mib": 4, "backing": "rdm_physical"}]},
            {"name": "indep-01", "disks": [{"capacity_mib": 4, "mode": "independent_persistent"}]},
            {"name": "vvol-01", "datastore": "vvol1", "disks": [DISK]},
            {"name": "tmpl-ubuntu", "disks": [DISK], "template": True},
            {"name": "snapship-client", "disks": [DISK], "instance_uuid": CLIENT_UUID,
             "snapship_client": True},
        ],
    }],
}
EXPECTED_REASONS = {
    "db-01": "VMware snapshots (before-upgrade)",
    "legacy-01": "older than vmx-07",
    "rdm-01": "raw device mapping",
    "indep-01": "independent disk",
    "vvol-01": "Virtual Volumes",
}


@dataclass
class Sim:
    handle: Any
    cfg: ClientConfig


class Deps:
    """The slice of the worker's WorkerDeps that discovery uses."""

    def __init__(self, cfg: ClientConfig, password: str) -> None:
        self.config = cfg
        self._password = password

    def vcenter_settings(self, vcenter_id: str = "") -> VcenterSettings:
        return find_vcenter(self.config, vcenter_id)

    @contextmanager
    def vcenter(self, vcenter_id: str = "") -> Iterator[VcenterSession]:
        v = self.vcenter_settings(vcenter_id)
        with VcenterSession(v.host, v.user, self._password, port=v.port,
                            ca_path=v.ca_path) as session:
            yield session


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    from sandbox.vcsim.testing import start_simulator

    handle = start_simulator(SCENARIO, tmp_path / "vcsim")
    cfg = ClientConfig(data_dir=str(tmp_path), client_id="disc", client_vm_uuid=CLIENT_UUID,
                       source_server_tags={"wave": "1"})
    cfg.vcenter.host = handle.host
    cfg.vcenter.port = handle.port
    cfg.vcenter.user = ADMIN
    cfg.vcenter.ca_path = str(handle.ca_path)
    cfg.vcenter.instance_uuid = handle.simulator.instance_uuid
    cfg.temporal.control_task_queue = f"discovery-{uuid.uuid4().hex[:8]}"
    try:
        yield Sim(handle, cfg)
    finally:
        handle.stop()


def test_scan_records_reasons_and_excludes_templates_and_client(sim: Sim) -> None:
    with Deps(sim.cfg, PASSWORD).vcenter() as session:
        scan = scan_vcenter(session, CLIENT_UUID, {"wave": "1"})
    assert scan.vms_seen == 9
    assert scan.templates_skipped == 1 and scan.client_vm_skipped == 1
    by_name = {s.facts.name: s for s in scan.servers}
    assert set(by_name) == {"web-01", "web-02", "db-01", "legacy-01", "rdm-01", "indep-01",
                            "vvol-01"}
    assert by_name["web-01"].eligibility.eligible and by_name["web-02"].eligibility.eligible
    for name, phrase in EXPECTED_REASONS.items():
        reasons = by_name[name].eligibility.reasons
        assert not by_name[name].eligibility.eligible
        assert any(phrase in r for r in reasons), (name, reasons)
    web = by_name["web-01"].facts
    sim_vm = next(v for v in sim.handle.simulator.inv.vms() if v.name == "web-01")
    assert web.instance_uuid == sim_vm.instance_uuid.lower()
    assert (web.num_cpu, web.memory_mb, web.firmware, web.guest_id) == (2, 4096, "efi",
                                                                     "ubuntu64Guest")
    assert len(web.disks) == 2 and all(d.capacity_bytes == 4 << 20 for d in web.disks)
    assert web.nics and web.nics[0].mac_address
    assert by_name["web-02"].facts.power_state == "poweredOff"
    assert all(s.tags == {"wave": "1"} for s in scan.servers)
    # A handful of round trips, not one per VM.
    assert scan.round_trips <= 6


@pytest_asyncio.fixture
async def discovery_worker(
    temporal_env: WorkflowEnvironment, sim: Sim
) -> AsyncIterator[Client]:
    client = temporal_env.client
    acts = DiscoveryActivities(Deps(sim.cfg, PASSWORD))
    async with Worker(
        client,
        task_queue=sim.cfg.temporal.control_task_queue,
        workflows=[DiscoveryWorkflow, SourceServerWorkflow],
        activities=acts.all(),
    ):
        yield client
        prefix = source_server_id(sim.cfg.vcenter.instance_uuid, "")
        async for e in client.list_workflows('ExecutionStatus="Running"'):
            if e.id.startswith(prefix):
                await client.get_workflow_handle(e.id).terminate("test over")
    gc.collect()  # finalize evicted workflow coroutines now, not during a later import


async def statuses(client: Client, cfg: ClientConfig, expect: int) -> dict[str, SourceServerStatus]:
    prefix = source_server_id(cfg.vcenter.instance_uuid, "")
    for _ in range(100):
        ids = [e.id async for e in client.list_workflows(
            f'WorkflowType="SourceServerWorkflow" AND SnapshipVcenterHost="{cfg.vcenter.host}"'
        ) if e.id.startswith(prefix)]
        if len(ids) >= expect:
            break
        await asyncio.sleep(0.1)
    out = {}
    for wid in ids:
        out[wid] = await client.get_workflow_handle(wid).query(
            "status", result_type=SourceServerStatus
        )
    return out


async def test_discovery_workflow_upserts_renames_and_vanishes(
    discovery_worker: Client, sim: Sim
) -> None:
    client, cfg = discovery_worker, sim.cfg
    first = await run_discovery(client, cfg)
    assert first is not None
    assert (first.vms_seen, first.templates_skipped, first.client_vm_skipped) == (9, 1, 1)
    assert (first.upserted, first.eligible, first.ineligible) == (7, 2, 5)
    assert first.vanished == 0 and not first.failed
    found = await statuses(client, cfg, 7)
    assert len(found) == 7
    by_name = {s.vm_name: (wid, s) for wid, s in found.items()}
    for name, phrase in EXPECTED_REASONS.items():
        status = by_name[name][1]
        assert status.lifecycle_state == "DISCOVERED"
        assert not status.eligible and any(phrase in r for r in status.eligibility_reasons)
    assert by_name["web-01"][1].eligible and by_name["web-01"][1].tags == {"wave": "1"}
    assert by_name["web-01"][1].replication_type == "SNAPSHOT_SHIPPING"

    # Rename web-01 and delete web-02 in vCenter, then discover again.
    inv = sim.handle.simulator.inv
    with inv.lock:
        web01 = next(v for v in inv.vms() if v.name == "web-01")
        web01.name = "web-01-renamed"
        web02 = next(v for v in inv.vms() if v.name == "web-02")
        inv.remove(web02.moref)
        web02.parent.children.remove(web02)
        for vm in (web01, web02):
            vm.touch()
    inv.notify()
    second = await run_discovery(client, cfg)
    assert second is not None
    assert second.upserted == 6 and second.vanished == 1
    found = await statuses(client, cfg, 7)
    assert len(found) == 7  # the rename made no new server
    renamed_id = by_name["web-01"][0]
    assert found[renamed_id].vm_name == "web-01-renamed"
    gone = found[by_name["web-02"][0]]
    assert gone.vanished and gone.lifecycle_state == "DISCONNECTED"

    # Already marked: a third pass does not signal the vanished server again.
    third = await run_discovery(client, cfg)
    assert third is not None and third.vanished == 0


async def test_discovery_schedule_is_created_then_updated(
    temporal_env: WorkflowEnvironment, sim: Sim
) -> None:
    client = temporal_env.client
    cfg = sim.cfg
    cfg.replication.discovery_interval_seconds = 900
    try:
        assert await ensure_discovery_schedule(client, cfg) == "created"
        cfg.replication.discovery_interval_seconds = 1800
        assert await ensure_discovery_schedule(client, cfg) == "updated"
        desc = await client.get_schedule_handle(DISCOVERY_SCHEDULE_ID).describe()
        assert desc.schedule.spec.intervals[0].every == timedelta(seconds=1800)
        action = desc.schedule.action
        assert getattr(action, "workflow", None) == "DiscoveryWorkflow"
        assert getattr(action, "task_queue", None) == cfg.temporal.control_task_queue
    finally:
        await client.get_schedule_handle(DISCOVERY_SCHEDULE_ID).delete()


DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "demo.yaml"
DEMO_CLIENT_UUID = "5003e1a2-0000-4000-8000-00000000c11e"


def test_demo_scenario_discovery(tmp_path: Path) -> None:
    """The demo's estate: the appliance and the template are left out, every other VM is listed
    with the reason it cannot replicate (or the warning it gets)."""
    from sandbox.vcsim.scenario import load_scenario
    from sandbox.vcsim.testing import start_simulator

    scenario = load_scenario(DEMO_SCENARIO)
    handle = start_simulator(scenario, tmp_path / "vcsim")
    try:
        user, password = "snapship@vsphere.local", handle.users["snapship@vsphere.local"]
        with VcenterSession(handle.host, user, password, port=handle.port,
                            ca_path=str(handle.ca_path)) as session:
            scan = scan_vcenter(session, DEMO_CLIENT_UUID, {"wave": "demo"})
    finally:
        handle.stop()
    all_names = {vm["name"] for dc in scenario["datacenters"] for vm in dc["vms"]}
    assert scan.vms_seen == len(all_names)
    assert (scan.templates_skipped, scan.client_vm_skipped) == (1, 1)
    by_name = {s.facts.name: s for s in scan.servers}
    assert set(by_name) == all_names - {"golden-template", "snapship-appliance"}
    expected = {
        "db-01": ["VMware snapshots (before-upgrade)", "independent disk"],
        "win-app-01": ["Virtual Volumes"],
        "legacy-nt": ["older than vmx-07"],
        "fileserver-rdm": ["raw device mapping"],
    }
    for name, phrases in expected.items():
        server = by_name[name]
        assert not server.eligibility.eligible
        for phrase in phrases:
            assert any(phrase in r for r in server.eligibility.reasons), (name, phrase)
    for name in ("web-01", "web-02"):
        assert by_name[name].eligibility.eligible, by_name[name].eligibility.reasons
    # VMware Tools reports < 2 GiB free on web-01's volumes: a warning, not a blocker.
    assert any("2 GiB" in w for w in by_name["web-01"].eligibility.warnings)
    assert by_name["web-01"].facts.firmware == "efi"
    assert len(by_name["db-01"].facts.disks) == 3


async def test_discover_command_prints_counts(
    discovery_worker: Client, sim: Sim, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from snapship.cli import app

    sim.cfg.save()

    async def fake_connect(_cfg: ClientConfig) -> Client:
        return discovery_worker

    monkeypatch.setattr(app, "connect", fake_connect)
    code = await asyncio.to_thread(
        app.main, ["discover", "--no-schedule", "--data-dir", sim.cfg.data_dir]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out + captured.err  # the console's one line goes to stderr
    assert "Discovered 7 source server(s) in vCenter localhost (2 eligible, 5 not eligible)" in out
    assert "templates skipped 1; client VM skipped 1; vanished 0" in out
