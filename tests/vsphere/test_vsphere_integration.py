"""snapship.vsphere against the sandbox vSphere simulator (real SOAP over verified HTTPS).

One simulator per module keeps the suite fast; each test works on its own VM so the order of the
tests does not matter.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox.vcsim.testing import SimulatorHandle, start_simulator
from snapship.vsphere import errors
from snapship.vsphere.cbt import ensure_cbt_active, scan_changed_areas
from snapship.vsphere.eligibility import check_eligibility
from snapship.vsphere.inventory import read_inventory
from snapship.vsphere.location import compare_locations, record_location
from snapship.vsphere.privileges import REQUIRED_PRIVILEGES, check_vm_privileges
from snapship.vsphere.props import retrieve_object
from snapship.vsphere.session import VcenterSession
from snapship.vsphere.snapshots import (
    create_snapshot,
    find_own_snapshots,
    list_foreign_snapshots,
    list_snapshots,
    remove_own_leftovers,
    remove_snapshot,
)
from snapship.vsphere.tls import fetch_server_certificate

ADMIN = "administrator@vsphere.local"
ADMIN_PW = "integration-admin-pw"
GRAIN = 64 * 1024
DEMO = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "demo.yaml"


def _vm(name: str, **kw: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "host": "esx1",
        "datastore": "ds1",
        "cbt": False,
        "disks": [{"capacity_mib": 8}, {"capacity_mib": 4}],
    }
    spec.update(kw)
    return spec


SCENARIO: dict[str, Any] = {
    "vcenter": {"version": "8.0", "consolidation_seconds": 0.05, "max_changed_extents": 2000},
    "users": [
        {"name": ADMIN, "password": ADMIN_PW, "permissions": [{"entity": "/", "role": "Admin"}]},
    ],
    "datacenters": [
        {
            "name": "dc1",
            "datastores": [{"name": "ds1", "type": "VMFS"}, {"name": "ds2", "type": "VMFS"}],
            "networks": ["VM Network"],
            "clusters": [{"name": "cl1", "hosts": ["esx1", "esx2"]}],
            "vms": [
                _vm("cbt-01", disks=[{"capacity_mib": 320}]),
                _vm("snap-01"),
                _vm("leftover-01"),
                _vm("timeout-01"),
                _vm("busy-01"),
                _vm("move-01"),
                _vm("svmotion-01"),
                _vm("relogin-01"),
                _vm("filefault-01", cbt=True),
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    handle = start_simulator(SCENARIO, tmp_path_factory.mktemp("vcsim"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    handle = start_simulator(DEMO, tmp_path_factory.mktemp("vcsim-demo"))
    yield handle
    handle.stop()


def connect(
    sim: SimulatorHandle, user: str = ADMIN, password: str | None = None, **kw: Any
) -> VcenterSession:
    kw.setdefault("ca_path", str(sim.ca_path))
    pw = password if password is not None else sim.users[user]
    return VcenterSession(sim.host, user, pw, port=sim.port, timeout_s=30, **kw).connect()


@pytest.fixture()
def session(sim: SimulatorHandle) -> Iterator[VcenterSession]:
    s = connect(sim)
    yield s
    s.close()


def vm_moref(session: VcenterSession, name: str) -> str:
    matches = [vm.moref for vm in read_inventory(session).vms if vm.name == name]
    assert len(matches) == 1, name
    return matches[0]


# ----- connection, TLS, credentials ---------------------------------------------------------


def test_connect_verifies_tls_with_the_ca_file(sim: SimulatorHandle) -> None:
    with connect(sim) as s:
        assert s.about.apiType == "VirtualCenter"
        assert s.about.version.startswith("8.0")
        assert s.api_version == "vim.version.v8_0_3_0"
        assert s.instance_uuid == sim.simulator.instance_uuid
        assert s.content.sessionManager.currentSession.userName == ADMIN


def test_connection_without_the_ca_is_refused_with_advice(sim: SimulatorHandle) -> None:
    with pytest.raises(errors.TlsVerificationFailed) as info:
        connect(sim, ca_path=None)
    text = str(info.value)
    assert "certificate" in text and "--vcenter-ca-path" in text
    assert "--disable-ssl-cert-validation" in text


def test_disabled_validation_connects_and_warns(
    sim: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with connect(sim, ca_path=None, disable_ssl_cert_validation=True) as s:
        assert s.about.apiType == "VirtualCenter"
    assert any("DISABLED" in r.getMessage() for r in caplog.records)


def test_bad_password_is_named_and_not_echoed(sim: SimulatorHandle) -> None:
    with pytest.raises(errors.InvalidCredentials) as info:
        connect(sim, password="wrong-password-123")
    assert "vCenter rejected the user name or password" in str(info.value)
    assert "wrong-password-123" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_secret_object_is_revealed_only_for_login(sim: SimulatorHandle) -> None:
    class Secret:
        reveals = 0

        def reveal(self) -> str:
            Secret.reveals += 1
            return ADMIN_PW

    with VcenterSession(sim.host, ADMIN, Secret(), port=sim.port, ca_path=str(sim.ca_path)) as s:
        assert s.about.apiType == "VirtualCenter"
    assert Secret.reveals == 1


def test_unreachable_port_is_explained() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.VcenterUnreachable) as info:
        VcenterSession("127.0.0.1", ADMIN, "x", port=port, timeout_s=5).connect()
    assert "connection refused" in str(info.value) and "firewall" in str(info.value)


def test_vcenter_67_is_accepted_with_its_api_version(tmp_path: Path) -> None:
    scenario = {**SCENARIO, "vcenter": {"version": "6.7"}}
    handle = start_simulator(scenario, tmp_path)
    try:
        with connect(handle) as s:
            assert s.about.version.startswith("6.7")
            assert s.api_version == "vim.version.version15"
    finally:
        handle.stop()


def test_thumbprint_comes_from_the_handshake(sim: SimulatorHandle) -> None:
    cert = fetch_server_certificate(sim.host, sim.port)
    assert cert.sha1_thumbprint == sim.thumbprint
    assert cert.pem.startswith("-----BEGIN CERTIFICATE-----")


# ----- re-login -------------------------------------------------------------------------------


def test_relogin_after_session_expiry_for_calls_and_task_waits(
    sim: SimulatorHandle, session: VcenterSession
) -> None:
    vm = vm_moref(session, "relogin-01")
    sim.admin.expire_sessions()
    assert list_snapshots(session, vm) == []  # property collection after expiry
    assert session.relogins == 1

    sim.admin.delay_tasks("CreateSnapshot", 1.0)
    try:
        timer = threading.Timer(0.4, sim.admin.expire_sessions)
        timer.start()
        snap = create_snapshot(session, vm, "wf-relogin", "r1", timeout_s=20)  # method + wait
        timer.join()
    finally:
        sim.admin.clear_faults()
    assert session.relogins == 2
    sim.admin.expire_sessions()
    remove_snapshot(session, snap.snapshot_moref, timeout_s=20)
    assert session.relogins == 3
    assert list_snapshots(session, vm) == []


@pytest.mark.parametrize("fast", [True, False])
def test_inventory_restarts_when_the_session_expires_between_pages(
    sim: SimulatorHandle, session: VcenterSession, fast: bool
) -> None:
    stub = session.stub
    original_method, original_raw = stub.InvokeMethod, stub.invoke_raw
    expired: list[int] = []

    def after(info: Any) -> None:
        if info.wsdlName == "RetrievePropertiesEx" and not expired:
            expired.append(sim.admin.expire_sessions())  # the next page meets a dead session

    def invoke(mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        result = original_method(mo, info, args, outerStub)
        after(info)
        return result

    def invoke_raw(mo: Any, info: Any, args: Any) -> bytes:
        result = original_raw(mo, info, args)
        after(info)
        return result

    stub.InvokeMethod = invoke  # type: ignore[method-assign]
    stub.invoke_raw = invoke_raw  # type: ignore[method-assign]
    try:
        inv = read_inventory(session, max_objects=3, fast=fast)
    finally:
        del stub.InvokeMethod, stub.invoke_raw
    assert expired and session.relogins == 1
    names = sorted(v["name"] for v in SCENARIO["datacenters"][0]["vms"])
    assert sorted(vm.name for vm in inv.vms) == names


# ----- inventory ------------------------------------------------------------------------------


def test_demo_inventory_in_few_round_trips(demo: SimulatorHandle) -> None:
    with connect(demo, "snapship@vsphere.local") as s:
        inv = read_inventory(s)
        assert inv.round_trips == 3  # CreateContainerView, RetrievePropertiesEx, DestroyView
        paged = read_inventory(s, max_objects=5)
        assert paged.round_trips == 2 + math.ceil(paged.objects_read / 5)
        assert paged.vms == inv.vms
        slow = read_inventory(s, fast=False)  # pyvmomi's own objects: the same facts
        assert (slow.vms, slow.hosts, slow.datastores) == (inv.vms, inv.hosts, inv.datastores)
    by_name = {vm.name: vm for vm in inv.vms}
    assert set(by_name) == {v["name"] for v in demo.admin.vms()}

    web = by_name["web-01"]
    assert (web.num_cpu, web.memory_mb, web.firmware, web.guest_id) == (
        2,
        4096,
        "efi",
        "ubuntu64Guest",
    )
    assert web.host_name == "esx-01.lab.local" and web.datacenter == "dc-east"
    assert [d.capacity_bytes for d in web.disks] == [32 * 2**20, 16 * 2**20]
    assert all(
        d.backing_uuid and d.file_name and d.file_name.startswith("[vmfs-01]") for d in web.disks
    )
    assert [n.network_name for n in web.nics] == ["VM Network"]
    assert web.change_tracking_enabled is True
    assert {g.path for g in web.guest_disks} == {"/", "/var/www"}
    assert by_name["db-01"].snapshot_names == ["before-upgrade"]

    client = by_name["snapship-appliance"]
    verdict = {n: check_eligibility(vm, client.bios_uuid) for n, vm in by_name.items()}
    assert {n for n, r in verdict.items() if r.eligible} == {"web-01", "web-02"}
    assert any("snapshots" in r for r in verdict["db-01"].reasons)
    assert any("independent" in r for r in verdict["db-01"].reasons)
    assert any("Virtual Volumes" in r for r in verdict["win-app-01"].reasons)
    assert any("vmx-04" in r for r in verdict["legacy-nt"].reasons)
    assert any("raw device mapping" in r for r in verdict["fileserver-rdm"].reasons)
    assert any("template" in r for r in verdict["golden-template"].reasons)
    assert any("client" in r for r in verdict["snapship-appliance"].reasons)
    assert any("MiB free" in w for w in verdict["web-01"].warnings)  # 20 MiB free on /


def test_edge_case_inventory_reads_the_same_both_ways(tmp_path: Path) -> None:
    handle = start_simulator(DEMO.with_name("edge-cases.yaml"), tmp_path)
    try:
        with connect(handle) as s:
            fast, slow = read_inventory(s), read_inventory(s, fast=False)
    finally:
        handle.stop()
    assert fast.vms == slow.vms and len(fast.vms) == 15
    by_name = {vm.name: check_eligibility(vm, None) for vm in fast.vms}
    assert by_name["powered-off"].eligible and by_name["tiny-odd-size"].eligible
    for name in (
        "sesparse",
        "sparse-v2",
        "rdm-virtual",
        "all-independent",
        "on-vvol",
        "with-snapshots",
        "template",
        "no-disks",
        "vmx-04",
    ):
        assert not by_name[name].eligible, name


# ----- CBT --------------------------------------------------------------------------------------


def test_cbt_enable_and_changed_areas_over_many_pages(
    sim: SimulatorHandle, session: VcenterSession
) -> None:
    vm = vm_moref(session, "cbt-01")
    status = ensure_cbt_active(session, vm, "wf-cbt")
    assert status.enabled_now and status.activated_now  # running VM: needed a stun
    assert all(status.live_change_ids.values())
    again = ensure_cbt_active(session, vm, "wf-cbt")
    assert not again.enabled_now and not again.activated_now
    assert list_snapshots(session, vm) == []  # the activation snapshot is gone
    first = create_snapshot(session, vm, "wf-cbt", "r1")
    disk = first.disks[0]
    assert disk.change_id and disk.capacity_bytes == 320 * 2**20
    remove_snapshot(session, first.snapshot_moref)

    offsets = [i * 2 * GRAIN for i in range(2100)]  # every other grain: 2100 separate extents
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda o: sim.admin.write("cbt-01", o, b"\x5a" * 512), offsets))
    second = create_snapshot(session, vm, "wf-cbt", "r2")
    try:
        scan = scan_changed_areas(
            session, vm, second.snapshot_moref, disk.device_key, disk.capacity_bytes, disk.change_id
        )
        assert scan.calls >= 2  # the server caps an answer at 2000 extents
        assert scan.extents == [(o, GRAIN) for o in offsets]
        everything = scan_changed_areas(
            session, vm, second.snapshot_moref, disk.device_key, disk.capacity_bytes, "*"
        )
        assert {o for o, _ in scan.extents} <= {
            o + k for o, n in everything.extents for k in range(0, n, GRAIN)
        }
    finally:
        remove_snapshot(session, second.snapshot_moref)


def test_cbt_file_fault_means_full_resync(sim: SimulatorHandle, session: VcenterSession) -> None:
    vm = vm_moref(session, "filefault-01")
    snap = create_snapshot(session, vm, "wf-ff", "r1")
    try:
        d = snap.disks[0]
        sim.admin.qcda_filefault(1)
        with pytest.raises(errors.CbtResetRequired):
            scan_changed_areas(
                session, vm, snap.snapshot_moref, d.device_key, d.capacity_bytes, d.change_id or "*"
            )
    finally:
        sim.admin.clear_faults()
        remove_snapshot(session, snap.snapshot_moref)


# ----- snapshots ---------------------------------------------------------------------------------


def test_snapshot_create_reads_disks_and_remove_waits(session: VcenterSession) -> None:
    vm = vm_moref(session, "snap-01")
    ensure_cbt_active(session, vm, "wf-snap")
    snap = create_snapshot(session, vm, "wf-snap", "r1", description="integration")
    assert snap.name == "snapship-wf-snap@r1"
    assert [d.device_key for d in snap.disks] == [2000, 2001]
    assert [d.capacity_bytes for d in snap.disks] == [8 * 2**20, 4 * 2**20]
    assert all(d.change_id and d.backing_uuid and d.file_name for d in snap.disks)
    assert [s.name for s in list_snapshots(session, vm)] == [snap.name]
    remove_snapshot(session, snap.snapshot_moref)
    assert list_snapshots(session, vm) == []
    remove_snapshot(session, snap.snapshot_moref)  # removing twice is harmless


def test_leftovers_of_this_workflow_are_removed_and_foreign_ones_kept(
    sim: SimulatorHandle, session: VcenterSession
) -> None:
    vm = vm_moref(session, "leftover-01")
    create_snapshot(session, vm, "wf-left", "crashed-run")  # a run that died before cleanup
    sim.admin.create_snapshot("leftover-01", "user-before-patch")
    create_snapshot(session, vm, "wf-other", "r9")  # another workflow's: not ours to remove
    assert [s.name for s in find_own_snapshots(session, vm, "wf-left")] == [
        "snapship-wf-left@crashed-run"
    ]
    assert remove_own_leftovers(session, vm, "wf-left") == ["snapship-wf-left@crashed-run"]
    names = [s.name for s in list_snapshots(session, vm)]
    assert names == ["user-before-patch", "snapship-wf-other@r9"]
    assert [s.name for s in list_foreign_snapshots(session, vm)] == ["user-before-patch"]


def test_create_timeout_does_not_leak_a_snapshot(
    sim: SimulatorHandle, session: VcenterSession
) -> None:
    vm = vm_moref(session, "timeout-01")
    sim.admin.delay_tasks("CreateSnapshot", 1.5)
    try:
        started = time.monotonic()
        with pytest.raises(errors.SnapshotTimedOut) as info:
            create_snapshot(session, vm, "wf-to", "r1", timeout_s=0.3, late_grace_s=10)
    finally:
        sim.admin.clear_faults()
    assert info.value.cleaned_up
    assert time.monotonic() - started < 10
    assert list_snapshots(session, vm) == []


def test_no_new_snapshot_while_a_removal_runs(
    sim: SimulatorHandle, session: VcenterSession
) -> None:
    vm = vm_moref(session, "busy-01")
    snap = create_snapshot(session, vm, "wf-busy", "r1")
    sim.admin.delay_tasks("RemoveSnapshot", 1.5)
    try:
        remover = threading.Thread(target=remove_snapshot, args=(session, snap.snapshot_moref))
        remover.start()
        try:
            time.sleep(0.3)
            with pytest.raises(errors.SnapshotRemovalInProgress):
                create_snapshot(session, vm, "wf-busy", "r2")
        finally:
            remover.join()
            remove_own_leftovers(session, vm, "wf-busy")
    finally:
        sim.admin.clear_faults()
    assert list_snapshots(session, vm) == []


# ----- privileges ------------------------------------------------------------


def test_privileges_missing_for_a_restricted_user(demo: SimulatorHandle) -> None:
    with connect(demo, "auditor@vsphere.local") as s:
        vm = vm_moref(s, "web-01")
        report = check_vm_privileges(s, [vm])
    assert not report.ok
    assert sorted(p.name for p in report.missing[vm]) == sorted(REQUIRED_PRIVILEGES.values())
    with pytest.raises(errors.MissingPrivileges, match="Acquire disk lease"):
        report.raise_if_missing()

    with connect(demo, "snapship@vsphere.local") as s:
        assert check_vm_privileges(s, [vm]).ok


# ----- location --------------------------------------------------------------


def test_vmotion_during_a_run_is_detected(sim: SimulatorHandle, session: VcenterSession) -> None:
    vm = vm_moref(session, "move-01")
    before = record_location(session, vm)
    snap = create_snapshot(session, vm, "wf-move", "r1")
    try:
        during = record_location(session, vm)
        assert not compare_locations(before, during).moved  # our own snapshot is not a move
        sim.admin.vmotion("move-01", "esx2")
        after = record_location(session, vm)
    finally:
        remove_snapshot(session, snap.snapshot_moref)
    change = compare_locations(before, after)
    assert change.moved and change.host_changed and not change.moved_disks


def test_storage_vmotion_is_detected(sim: SimulatorHandle, session: VcenterSession) -> None:
    vm = vm_moref(session, "svmotion-01")
    before = record_location(session, vm)
    sim.admin.storage_vmotion("svmotion-01", "ds2")
    after = record_location(session, vm)
    change = compare_locations(before, after)
    assert change.moved and not change.host_changed
    assert change.datastores_changed and change.moved_disks == (2000, 2001)
    host = retrieve_object(session, type(session.vm(vm)), vm, ["runtime.host"])
    assert str(host["runtime.host"]._moId) == before.host_moref
