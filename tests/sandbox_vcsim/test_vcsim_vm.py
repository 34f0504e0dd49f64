"""VM operations over the wire: tasks, snapshots, CBT queries, migrations, privileges."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from .conftest import connect, find_vm


def _disks(cfg):
    return [d for d in cfg.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def test_snapshot_lifecycle_with_cbt(sim, si) -> None:
    vm = find_vm(si, "web-01")
    sim.admin.write("web-01", 0, b"A" * 100_000)
    t = vm.CreateSnapshot_Task("s1", "first", False, False)
    assert WaitForTask(t) == "success"
    s1 = t.info.result
    assert vm.snapshot.currentSnapshot == s1
    assert [s.name for s in vm.snapshot.rootSnapshotList] == ["s1"]
    d1 = _disks(s1.config)[0]
    assert d1.backing.changeId and "/" in d1.backing.changeId
    assert d1.backing.fileName != _disks(vm.config)[0].backing.fileName
    assert d1.backing.fileName == sim.admin.vm("web-01")["snapshots"][0]["disks"]["2000"]["file"]
    allocated = vm.QueryChangedDiskAreas(s1, 2000, 0, "*")
    assert [(e.start, e.length) for e in allocated.changedArea] == [(0, 131072)]
    sim.admin.write("web-01", 1_048_576, b"B" * 10)
    t2 = vm.CreateSnapshot_Task("s2", "", False, False)
    WaitForTask(t2)
    s2 = t2.info.result
    changed = vm.QueryChangedDiskAreas(s2, 2000, 0, d1.backing.changeId)
    assert [(e.start, e.length) for e in changed.changedArea] == [(1_048_576, 65536)]
    assert changed.length == 2 * 1024 * 1024
    # frozen content at s1 is what was written before it
    assert sim.admin.read("web-01", 1_048_576, 10, file=d1.backing.fileName) == b"\0" * 10
    assert WaitForTask(s1.RemoveSnapshot_Task(False)) == "success"
    assert WaitForTask(s2.RemoveSnapshot_Task(False)) == "success"
    assert vm.snapshot is None


def test_query_faults(sim, si) -> None:
    vm = find_vm(si, "db-01")
    t = vm.CreateSnapshot_Task("q", "", False, False)
    WaitForTask(t)
    snap = t.info.result
    cid = _disks(snap.config)[0].backing.changeId
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(snap, 2000, 1024 * 1024, cid)
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(snap, 2999, 0, cid)
    sim.admin.qcda_filefault(1)
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snap, 2000, 0, cid)
    assert vm.QueryChangedDiskAreas(snap, 2000, 0, cid).length == 1024 * 1024
    # the independent disk is not part of the snapshot
    assert len([d for d in _disks(snap.config) if d.backing.changeId]) == 1
    sim.admin.power("db-01", "hard-off")
    t = vm.CreateSnapshot_Task("after-crash", "", False, False)
    WaitForTask(t)
    with pytest.raises(vim.fault.FileFault):   # changeId from the epoch before the crash
        vm.QueryChangedDiskAreas(t.info.result, 2000, 0, cid)
    WaitForTask(snap.RemoveSnapshot_Task(True))
    lab = find_vm(si, "lab-01")
    t = lab.CreateSnapshot_Task("nocbt", "", False, False)
    WaitForTask(t)
    with pytest.raises(vim.fault.FileFault):
        lab.QueryChangedDiskAreas(t.info.result, 2000, 0, "*")
    WaitForTask(t.info.result.RemoveSnapshot_Task(False))


def test_missing_method_answers_method_not_found(sim, si) -> None:
    vm = find_vm(si, "db-01")
    t = vm.CreateSnapshot_Task("mnf", "", False, False)
    WaitForTask(t)
    sim.admin.missing_methods("QueryChangedDiskAreas")
    with pytest.raises(vmodl.fault.MethodNotFound) as ei:
        vm.QueryChangedDiskAreas(t.info.result, 2000, 0, "*")
    assert ei.value.method == "QueryChangedDiskAreas"
    sim.admin.clear_faults()
    assert vm.QueryChangedDiskAreas(t.info.result, 2000, 0, "*").length > 0
    WaitForTask(t.info.result.RemoveSnapshot_Task(False))


def test_consolidation_blocks_new_snapshot(sim, si) -> None:
    sim.admin.configure(consolidation_seconds=1.0)
    try:
        vm = find_vm(si, "web-01")
        t = vm.CreateSnapshot_Task("c1", "", False, False)
        WaitForTask(t)
        rm = t.info.result.RemoveSnapshot_Task(False)
        time.sleep(0.2)
        t2 = vm.CreateSnapshot_Task("c2", "", False, False)
        with pytest.raises(vim.fault.TaskInProgress):
            WaitForTask(t2)
        assert WaitForTask(rm) == "success"
    finally:
        sim.admin.configure(consolidation_seconds=0.05)


def test_reconfig_relocate_migrate_power(sim, si) -> None:
    vm = find_vm(si, "lab-01")
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=True, deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create",
                                        device=vim.vm.device.VirtualDisk(capacityInKB=512))])
    assert WaitForTask(vm.ReconfigVM_Task(spec)) == "success"
    assert vm.config.changeTrackingEnabled is True
    assert len(_disks(vm.config)) == 2
    ds2 = next(d for d in si.content.rootFolder.childEntity[0].datastore if d.name == "ds2")
    esx2 = next(h for h in si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host
            if h.name == "esx2")
    assert WaitForTask(vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=ds2, host=esx2))) \
        == "success"
    assert vm.runtime.host.name == "esx2"
    assert all(d.backing.fileName.startswith("[ds2]") for d in _disks(vm.config))
    esx1 = next(h for h in esx2.parent.host if h.name == "esx1")
    assert WaitForTask(vm.MigrateVM_Task(host=esx1, priority="defaultPriority")) == "success"
    assert vm.runtime.host.name == "esx1"
    state = vm.runtime.powerState
    task = vm.PowerOffVM_Task() if state == "poweredOn" else vm.PowerOnVM_Task()
    WaitForTask(task)
    assert vm.runtime.powerState != state


def test_injected_task_failure_and_template(sim, si) -> None:
    sim.admin.fail_tasks("CreateSnapshot", 1, "FileFault", "disk locked")
    vm = find_vm(si, "web-01")
    with pytest.raises(vim.fault.FileFault):
        WaitForTask(vm.CreateSnapshot_Task("f", "", False, False))
    with pytest.raises(vmodl.fault.NotSupported):
        WaitForTask(find_vm(si, "tmpl").CreateSnapshot_Task("t", "", False, False))


def test_privileges_per_user_and_entity(sim, si) -> None:
    auth = si.content.authorizationManager
    web, lab = find_vm(si, "web-01"), find_vm(si, "lab-01")
    res = auth.FetchUserPrivilegeOnEntities([web, lab], "backup@vsphere.local")
    privs = {r.entity._moId: set(r.privileges) for r in res}
    assert "VirtualMachine.State.CreateSnapshot" in privs[web._moId]
    assert privs[lab._moId] == set()
    b = connect(sim, "backup@vsphere.local")
    key = b.content.sessionManager.currentSession.key
    ent = auth.HasPrivilegeOnEntities([web, lab], key, ["VirtualMachine.State.CreateSnapshot"])
    granted = {e.entity._moId: e.privAvailability[0].isGranted for e in ent}
    assert granted == {web._moId: True, lab._moId: False}
    viewer = connect(sim, "viewer@vsphere.local")
    with pytest.raises(vim.fault.NoPermission):
        find_vm(viewer, "web-01").CreateSnapshot_Task("x", "", False, False)


def test_cbt_not_active_until_first_snapshot_and_history(sim, si, tmp_path: Path) -> None:
    sim.admin.configure(record_snapshot_content=True)
    vm = find_vm(si, "old")
    sim.admin.write("old", 0, b"Z" * 10)
    t = vm.CreateSnapshot_Task("h1", "", False, False)
    WaitForTask(t)
    first = t.info.result
    # configured-but-inactive CBT: the live disk has no changeId until the snapshot's stun
    # activates CBT; that snapshot already carries a changeId and answers "*"
    assert _disks(first.config)[0].backing.changeId
    areas = vm.QueryChangedDiskAreas(first, 2000, 0, "*")
    assert [(e.start, e.length) for e in areas.changedArea] == [(0, 65536)]
    hist = [h for h in sim.admin.history() if h["vm"] == "old"]
    assert hist and Path(hist[-1]["disks"]["2000"]).read_bytes()[:10] == b"Z" * 10
    sim.admin.configure(record_snapshot_content=False)
    WaitForTask(first.RemoveSnapshot_Task(False))


def test_storage_vmotion_with_snapshot_moves_frozen_layers(sim, si) -> None:
    vm = find_vm(si, "db-01")
    sim.admin.write("db-01", 4096, b"S" * 100)
    t = vm.CreateSnapshot_Task("sv", "", False, False)
    WaitForTask(t)
    snap = t.info.result
    before = _disks(snap.config)[0].backing.fileName
    target = "ds2" if before.startswith("[ds1]") else "ds1"
    sim.admin.storage_vmotion("db-01", target)
    after = _disks(snap.config)[0].backing.fileName
    assert after.startswith(f"[{target}]") and after != before
    published = (sim.state_dir / "vddk" / "snapshots" / vm._moId / snap._moId).read_text()
    assert after in published.splitlines()
    assert sim.admin.read("db-01", 4096, 100, file=after) == b"S" * 100
    WaitForTask(snap.RemoveSnapshot_Task(False))
    assert not (sim.state_dir / "vddk" / "snapshots" / vm._moId / snap._moId).exists()


def test_disk_add_extend_remove(sim, si) -> None:
    vm = find_vm(si, "web-01")
    key = sim.admin.add_disk("web-01", 256)
    assert any(d.key == key and d.capacityInKB == 256 for d in _disks(vm.config))
    disk = next(d for d in _disks(vm.config) if d.key == key)
    disk.capacityInKB = 512
    disk.capacityInBytes = 512 * 1024
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(
        operation="edit", device=disk)])
    assert WaitForTask(vm.ReconfigVM_Task(spec)) == "success"
    assert next(d for d in _disks(vm.config) if d.key == key).capacityInBytes == 512 * 1024
    sim.admin.remove_disk("web-01", key)
    assert all(d.key != key for d in _disks(vm.config))


def test_per_disk_relocation_and_physical_rdm(tmp_path: Path) -> None:
    from sandbox.vcsim.testing import start_simulator

    sc = {"users": [{"name": "u", "password": "p"}],
          "datacenters": [{"name": "dc", "datastores": [{"name": "a"}, {"name": "b"}],
                           "vms": [{"name": "two", "datastore": "a",
                                    "disks": [{"capacity_kb": 64}, {"capacity_kb": 64}]},
                                   {"name": "rdm", "disks": [{"capacity_kb": 64},
                                                             {"capacity_kb": 64,
                                                              "backing": "rdm"}]}]}]}
    h = start_simulator(sc, tmp_path)
    try:
        si = connect(h, "u", "p")
        vm = find_vm(si, "two")
        b = next(d for d in si.content.rootFolder.childEntity[0].datastore if d.name == "b")
        spec = vim.vm.RelocateSpec(disk=[vim.vm.RelocateSpec.DiskLocator(diskId=2001,
                                                                         datastore=b)])
        assert WaitForTask(vm.RelocateVM_Task(spec)) == "success"
        files = [d.backing.fileName for d in _disks(vm.config)]
        assert files[0].startswith("[a]") and files[1].startswith("[b]")
        assert sorted(d.name for d in vm.datastore) == ["a", "b"]
        bad = vim.vm.RelocateSpec(disk=[vim.vm.RelocateSpec.DiskLocator(diskId=2999,
                                                                        datastore=b)])
        with pytest.raises(vmodl.fault.InvalidArgument):
            vm.RelocateVM_Task(bad)
        with pytest.raises(vim.fault.SnapshotIncompatibleDeviceInVm):
            WaitForTask(find_vm(si, "rdm").CreateSnapshot_Task("x", "", False, False))
    finally:
        h.stop()


def test_delayed_calls_answer_late(sim, si) -> None:
    """delay-calls slows one SOAP method (a slow vCenter), leaving the others quick."""
    vm = find_vm(si, "lab-01")
    sim.admin.delay_calls("CurrentTime", 0.5)
    try:
        t0 = time.monotonic()
        si.CurrentTime()
        slow = time.monotonic() - t0
        t0 = time.monotonic()
        assert vm.name == "lab-01"
        quick = time.monotonic() - t0
    finally:
        sim.admin.clear_faults()
    assert slow >= 0.5 > quick


def test_delayed_tasks_show_running_then_succeed(sim, si) -> None:
    sim.admin.delay_tasks("CreateSnapshot", 0.6)
    try:
        vm = find_vm(si, "lab-01")
        t = vm.CreateSnapshot_Task("slow", "", False, False)
        assert t.info.state in ("queued", "running")
        assert WaitForTask(t) == "success"
        assert t.info.progress == 100
        WaitForTask(t.info.result.RemoveSnapshot_Task(False))
    finally:
        sim.admin.clear_faults()
