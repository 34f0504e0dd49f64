"""`snapship vcenter add|remove|list` and `--vcenter` on servers/replicate, through `main(argv)`.

`add` talks to a real simulator (connection, TLS with its CA, privileges, instanceUuid) and to
the embedded Temporal server (its discovery schedule); `remove` and the filters run against real
SourceServerWorkflows created the way discovery creates them (of the replication activities only
stop's check of the VM runs, so a started server stays in its first run: replicating, never
finishing).
"""

from __future__ import annotations

import asyncio
import gc
import json
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.discovery import signal_with_start
from sandbox.vcsim.testing import SimulatorHandle, start_simulator
from snapship import vcenters
from snapship.cli import app
from snapship.config import ClientConfig, VcenterSettings
from snapship.messages import (
    DiscoveredServer,
    Eligibility,
    RemoveOwnSnapshotsInput,
    RemoveOwnSnapshotsResult,
    VmFacts,
)
from snapship.secrets import VCENTER_PASSWORD, SecretStore
from workflows.discovery import DiscoveryRequest
from workflows.source_server import SourceServerWorkflow

ADMIN, ADMIN_PW = "administrator@vsphere.local", "Berlin-Adm1n-pw!"
LIMITED, LIMITED_PW = "backup@vsphere.local", "Backup-pw!"
FIRST_UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SECOND_UUID = "5e6f7a8b-0000-4000-8000-00000000beef"
VMS = {f"{p}-0{i}": f"{p}0000000-0000-4000-8000-00000000000{i}" for p in "ab" for i in (1, 2)}
SCENARIO: dict[str, Any] = {
    "vcenter": {"version": "8.0"},
    "roles": {"ReadOnlyish": ["System.Anonymous", "System.View", "System.Read"]},
    "users": [
        {"name": ADMIN, "password": ADMIN_PW, "permissions": [{"entity": "/", "role": "Admin"}]},
        {"name": LIMITED, "password": LIMITED_PW,
         "permissions": [{"entity": "/", "role": "ReadOnlyish"}]},
    ],
    "datacenters": [{
        "name": "dc1", "datastores": [{"name": "ds1"}],
        "clusters": [{"name": "cl1", "hosts": ["esx1"]}],
        "vms": [{"name": "b-web-01", "disks": [{"capacity_mib": 4}]}],
    }],
}


def first_only_config(data_dir: Path) -> ClientConfig:
    cfg = ClientConfig(data_dir=str(data_dir), client_id="two-vc")
    # A unique first vCenter host keeps this test's servers apart from other tests'.
    cfg.vcenter.host = f"vc-{uuid.uuid4().hex[:8]}.example.test"
    cfg.vcenter.instance_uuid = FIRST_UUID
    cfg.vcenter.user = "first-user"
    cfg.temporal.control_task_queue = f"vc-console-{uuid.uuid4().hex[:8]}"
    cfg.save()
    SecretStore(cfg.secrets_path).set(VCENTER_PASSWORD, "first-pw")
    return cfg


@pytest.fixture
def fake_connect(temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> Client:
    client = temporal_env.client

    async def connect(_cfg: ClientConfig) -> Client:
        return client

    monkeypatch.setattr(app, "connect", connect)
    return client


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorHandle]:
    handle = start_simulator(SCENARIO, tmp_path / "vcsim")
    try:
        yield handle
    finally:
        handle.stop()


async def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # main() calls asyncio.run; run it in a thread so it gets its own event loop.
    code = await asyncio.to_thread(app.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_add_tests_the_vcenter_then_records_it_with_its_own_secret_and_schedule(
    tmp_path: Path, sim: SimulatorHandle, fake_connect: Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = first_only_config(tmp_path / "client")
    base = ["vcenter", "add", "--host", sim.host, "--port", str(sim.port),
            "--ca-path", str(sim.ca_path), "--data-dir", cfg.data_dir]
    before = (Path(cfg.data_dir) / "config.json").read_bytes()

    async def refused(argv: list[str], phrase: str) -> None:
        code, _out, err = await run_cli(argv, capsys)
        assert code != 0 and phrase in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert (Path(cfg.data_dir) / "config.json").read_bytes() == before

    # Each check fails fast with one line and writes nothing.
    await refused([*base, "--user", ADMIN, "--password", "wrong"], "user name or password")
    await refused([*base, "--user", LIMITED, "--password", LIMITED_PW],
                  "Toggle disk change tracking")
    await refused([*base, "--user", ADMIN, "--password", ADMIN_PW, "--max-shipping", "51"], "1-50")
    no_ca = ["vcenter", "add", "--host", sim.host, "--port", str(sim.port), "--user", ADMIN,
             "--password", ADMIN_PW, "--data-dir", cfg.data_dir]
    await refused(no_ca, "certificate")

    code, out, err = await run_cli(
        [*base, "--user", ADMIN, "--password", ADMIN_PW, "--name", "berlin",
                "--max-shipping", "3", "--discovery-interval", "600"], capsys)
    assert code == 0, err
    vc_uuid = sim.simulator.instance_uuid.lower()
    assert vc_uuid in out and "at most 3" in out
    saved = ClientConfig.load(Path(cfg.data_dir))
    assert saved.vcenter.host == cfg.vcenter.host  # the first vCenter is untouched
    (added,) = saved.vcenters
    assert (added.name, added.instance_uuid, added.user) == ("berlin", vc_uuid, ADMIN)
    assert (added.shipping_slots, added.discovery_interval_seconds) == (3, 600)
    assert added.version.startswith("8.0") and added.ca_path == str(Path(sim.ca_path).resolve())
    # The password is in the 0600 store under the vCenter's own name, never in config.json.
    store = SecretStore(saved.secrets_path)
    assert store.require(vcenters.password_secret_name(vc_uuid)).reveal() == ADMIN_PW
    assert store.require(VCENTER_PASSWORD).reveal() == "first-pw"
    assert stat.S_IMODE(saved.secrets_path.stat().st_mode) == 0o600
    assert ADMIN_PW not in saved.path.read_text()
    # Its own discovery schedule, naming it; the first vCenter's keeps its name.
    schedule_id = f"snapship-discovery-{vc_uuid}"
    assert schedule_id in out
    desc = await fake_connect.get_schedule_handle(schedule_id).describe()
    try:
        action: Any = desc.schedule.action
        request = await fake_connect.data_converter.decode(action.args, [DiscoveryRequest])
        assert request[0].vcenter_id == vc_uuid
        assert desc.schedule.spec.intervals[0].every.total_seconds() == 600
        # The same vCenter again, by address or (behind another name) by identity: refused.
        again = [*base, "--user", ADMIN, "--password", ADMIN_PW]
        before = saved.path.read_bytes()
        await refused(again, "already in this client")
        code, out, _ = await run_cli(
            ["vcenter", "list", "--json", "--data-dir", cfg.data_dir], capsys
        )
        listed = json.loads(out)
        assert [v["name"] for v in listed] == [cfg.vcenter.host, "berlin"]
        assert listed[1]["max_shipping"] == 3 and listed[1]["discovery_schedule"] == schedule_id
        assert all(ADMIN_PW not in json.dumps(v) for v in listed)

        # Update: new connection details are tested first; a failure changes nothing.
        up = ["vcenter", "update", "berlin", "--data-dir", cfg.data_dir]
        secrets_before = saved.secrets_path.read_bytes()
        await refused([*up, "--password", "wrong"], "will not be applied")
        await refused([*up, "--user", LIMITED, "--password", LIMITED_PW],
                      "Toggle disk change tracking")
        assert saved.secrets_path.read_bytes() == secrets_before
        code, out, err = await run_cli(
            [*up, "--user", ADMIN, "--password", ADMIN_PW, "--max-shipping", "5",
             "--discovery-interval", "900"], capsys)
        assert code == 0, err
        (updated,) = ClientConfig.load(Path(cfg.data_dir)).vcenters
        assert (updated.shipping_slots, updated.discovery_interval_seconds) == (5, 900)
        assert updated.instance_uuid == vc_uuid and updated.ca_path == added.ca_path
        desc = await fake_connect.get_schedule_handle(schedule_id).describe()
        assert desc.schedule.spec.intervals[0].every.total_seconds() == 900
    finally:
        await fake_connect.get_schedule_handle(schedule_id).delete()


def server(name: str, vm_uuid: str) -> DiscoveredServer:
    return DiscoveredServer(
        facts=VmFacts(moref=f"vm-{name}", name=name, instance_uuid=vm_uuid),
        eligibility=Eligibility(eligible=True),
        discovered_at="2026-12-01T00:00:00+00:00",
    )


@activity.defn(name="snapship.remove_own_snapshots")
async def no_snapshot_left(inp: RemoveOwnSnapshotsInput) -> RemoveOwnSnapshotsResult:
    """Stop's check of the VM (no vCenter here: no run ever got as far as a snapshot)."""
    return RemoveOwnSnapshotsResult()


@dataclass
class TwoVcenters:
    client: Client
    cfg: ClientConfig
    second: VcenterSettings


@pytest_asyncio.fixture
async def two(tmp_path: Path, fake_connect: Client) -> AsyncIterator[TwoVcenters]:
    cfg = first_only_config(tmp_path / "client")
    # Two vCenters on one host name (as two simulators are): only the id tells them apart.
    second = VcenterSettings(
        host=cfg.vcenter.host, port=8443, user="u2", instance_uuid=SECOND_UUID, name="berlin",
        password_secret=vcenters.password_secret_name(SECOND_UUID),
    )
    cfg.vcenters.append(second)
    cfg.save()
    SecretStore(cfg.secrets_path).set(second.password_secret, "second-pw")
    client = fake_connect
    async with Worker(client, task_queue=cfg.temporal.control_task_queue,
                      workflows=[SourceServerWorkflow], activities=[no_snapshot_left]):
        for name, vm_uuid in VMS.items():
            if name.startswith("a-"):
                await signal_with_start(client, cfg, FIRST_UUID, server(name, vm_uuid))
            else:
                await signal_with_start(client, cfg, SECOND_UUID, server(name, vm_uuid), second)
        yield TwoVcenters(client, cfg, second)
        for execution in [e async for e in client.list_workflows(
            f'SnapshipVcenterHost="{cfg.vcenter.host}" AND ExecutionStatus="Running"'
        )]:
            await client.get_workflow_handle(execution.id).terminate("test over")
    gc.collect()


async def names_listed(two: TwoVcenters, capsys: pytest.CaptureFixture[str], *extra: str,
                       want: set[str] | None = None) -> set[str]:
    """`servers --all --json`, waiting until visibility shows `want` (it is eventually
    consistent)."""
    for _ in range(100):
        code, out, err = await run_cli(
            ["servers", "--all", "--json", "--data-dir", two.cfg.data_dir, *extra], capsys
        )
        assert code == 0, err
        got = {r["name"] for r in json.loads(out)}
        if want is None or got == want:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"listed {got}, wanted {want}")


async def test_console_filters_by_vcenter_and_remove_never_loses_a_replica(
    two: TwoVcenters, capsys: pytest.CaptureFixture[str]
) -> None:
    d = two.cfg.data_dir
    await names_listed(two, capsys, want={"a-01", "a-02", "b-01", "b-02"})
    await names_listed(two, capsys, "--vcenter", "berlin", want={"b-01", "b-02"})
    await names_listed(two, capsys, "--vcenter", FIRST_UUID, want={"a-01", "a-02"})
    code, out, err = await run_cli(["servers", "--all", "--data-dir", d], capsys)
    assert code == 0, err
    first_part, berlin_part = out.split("vCenter berlin (")
    assert "a-01" in first_part and "b-01" not in first_part and SECOND_UUID in berlin_part
    assert "b-01" in berlin_part and "a-01" not in berlin_part
    code, _, err = await run_cli(["servers", "--vcenter", "paris", "--data-dir", d], capsys)
    assert code == 1 and "No vCenter 'paris'" in err and "berlin" in err

    # `replicate --vcenter` selects only that vCenter's servers.
    code, out, err = await run_cli(["replicate", "start", "--all", "--vcenter", "berlin",
                              "--data-dir", d], capsys)
    assert code == 0, err
    assert "b-01" in out and "b-02" in out and "a-01" not in out
    for _ in range(100):
        code, out, _ = await run_cli(["servers", "--json", "--vcenter", "berlin", "--data-dir", d],
                               capsys)
        if {r["name"] for r in json.loads(out)} == {"b-01", "b-02"}:
            break
        await asyncio.sleep(0.2)

    # Refused while its servers replicate, naming them; nothing changes.
    before = two.cfg.path.read_bytes()
    code, _, err = await run_cli(["vcenter", "remove", "berlin", "--data-dir", d], capsys)
    assert code == 1 and "b-01" in err and "b-02" in err and "--stop-replication" in err
    assert len(err.strip().splitlines()) == 1
    assert two.cfg.path.read_bytes() == before
    code, _, err = await run_cli(
        ["vcenter", "remove", two.cfg.vcenter.host, "--data-dir", d], capsys
    )
    assert code == 1 and "installed with" in err

    # With --stop-replication: stopped first, then removed; the servers (and replicas) stay.
    code, out, err = await run_cli(["vcenter", "remove", "berlin", "--stop-replication",
                              "--data-dir", d], capsys)
    assert code == 0, err
    assert "kept" in out
    saved = ClientConfig.load(Path(d))
    assert saved.vcenters == []
    assert SecretStore(saved.secrets_path).get(two.second.password_secret) is None
    assert SecretStore(saved.secrets_path).get(VCENTER_PASSWORD) is not None
    for name in ("b-01", "b-02"):
        wid = vcenters.workflow_id_prefix(two.second) + VMS[name]
        status = await two.client.get_workflow_handle(wid).query(SourceServerWorkflow.status)
        assert status.vm_name == name and not status.replicating
        assert status.data_replication_state == "STOPPED"
