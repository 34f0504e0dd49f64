"""Scale: full-inventory collection in a few round trips; 50 concurrent clients."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from sandbox.vcsim.scenario import generate_scenario
from sandbox.vcsim.testing import INVENTORY_PATHS, collect_inventory, start_simulator

from .conftest import connect

PATHS = INVENTORY_PATHS


def test_inventory_collection_few_round_trips(tmp_path: Path) -> None:
    n = 1000
    h = start_simulator(generate_scenario(n), tmp_path)
    try:
        si = connect(h, "administrator@vsphere.local")
        t0 = time.monotonic()
        objs, trips = collect_inventory(si)
        first = time.monotonic() - t0
        assert len(objs) == n and trips == 1
        props = {p.name: p.val for p in objs[0].propSet}
        assert set(props) == set(PATHS)
        assert len([d for d in props["config.hardware.device"]
                    if isinstance(d, vim.vm.device.VirtualDisk)]) == 2
        assert len({o.propSet[1].val for o in objs}) == n   # instance UUIDs are unique
        assert first < 60
        # no disk files were created for a metadata-only inventory
        assert not list((tmp_path / "datastores").rglob("*.data"))
        Disconnect(si)
    finally:
        h.stop()


def test_fifty_concurrent_clients(tmp_path: Path) -> None:
    sc = generate_scenario(50, disks_per_vm=1)
    for vm in sc["datacenters"][0]["vms"]:
        vm["cbt"] = True
        vm["disks"] = [{"capacity_kb": 512}]
    sc["vcenter"]["consolidation_seconds"] = 0.01
    h = start_simulator(sc, tmp_path)
    errors: list[BaseException] = []
    names = [v["name"] for v in sc["datacenters"][0]["vms"]]

    def client(i: int) -> None:
        try:
            si = connect(h, "administrator@vsphere.local")
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder,
                                                           [vim.VirtualMachine], True)
            vm = next(v for v in view.view if v.name == names[i])
            h.admin.write(names[i], 0, bytes([i]) * 1000)
            t1 = vm.CreateSnapshot_Task("a", "", False, False)
            assert WaitForTask(t1) == "success"
            s1 = t1.info.result
            h.admin.write(names[i], 200_000, bytes([i]) * 10)
            t2 = vm.CreateSnapshot_Task("b", "", False, False)
            assert WaitForTask(t2) == "success"
            s2 = t2.info.result
            disk = next(d for d in s1.config.hardware.device
                        if isinstance(d, vim.vm.device.VirtualDisk))
            areas = vm.QueryChangedDiskAreas(s2, disk.key, 0, disk.backing.changeId)
            assert [(e.start, e.length) for e in areas.changedArea] == [(196608, 65536)]
            assert WaitForTask(s1.RemoveSnapshot_Task(True)) == "success"
            assert vm.snapshot is None
            Disconnect(si)
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
    finally:
        h.stop()
