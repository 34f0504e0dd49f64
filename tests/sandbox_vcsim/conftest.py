"""Shared fixtures: a small simulator started in-process, pyvmomi connections to it."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect

from sandbox.vcsim.testing import SimulatorHandle, start_simulator

ADMIN = "administrator@vsphere.local"


def small_scenario(**vcenter: Any) -> dict[str, Any]:
    return {
        "vcenter": {"consolidation_seconds": 0.05, **vcenter},
        "roles": {"Backup": ["System.Anonymous", "System.View", "System.Read",
                             "VirtualMachine.State.CreateSnapshot",
                             "VirtualMachine.State.RemoveSnapshot",
                             "VirtualMachine.Provisioning.DiskRandomRead"]},
        "users": [
            {"name": ADMIN, "password": "admin-pw", "permissions": [{"entity": "/",
                                                                     "role": "Admin"}]},
            {"name": "backup@vsphere.local", "password": "backup-pw",
             "permissions": [{"entity": "prod", "role": "Backup"}]},
            {"name": "viewer@vsphere.local", "password": "viewer-pw",
             "permissions": [{"entity": "/", "role": "ReadOnly"}]},
        ],
        "datacenters": [{
            "name": "dc1",
            "datastores": [{"name": "ds1", "type": "VMFS"}, {"name": "ds2", "type": "NFS"},
                           {"name": "vvol1", "type": "VVOL"}],
            "networks": ["VM Network"],
            "clusters": [{"name": "cl1", "hosts": ["esx1", "esx2"]}],
            "folders": ["prod", "lab"],
            "vms": [
                {"name": "web-01", "folder": "prod", "host": "esx1", "datastore": "ds1",
                 "cbt": True, "guest_id": "ubuntu64Guest", "firmware": "efi", "cpus": 2,
                 "memory_mb": 2048, "ip": "192.0.2.10",
                 "disks": [{"capacity_mib": 2, "guest_free_mib": 1},
                           {"capacity_kb": 1500}]},
                {"name": "db-01", "folder": "prod", "host": "esx2", "cbt": True,
                 "disks": [{"capacity_mib": 1}, {"capacity_mib": 1,
                                                 "mode": "independent_persistent"}]},
                {"name": "lab-01", "folder": "lab", "cbt": False,
                 "disks": [{"capacity_mib": 1}]},
                {"name": "tmpl", "folder": "lab", "template": True,
                 "disks": [{"capacity_mib": 1}]},
                {"name": "old", "folder": "lab", "hardware_version": 4, "cbt": True,
                 "cbt_not_active": True, "power": "poweredOn", "disks": [{"capacity_mib": 1}]},
            ],
        }],
    }


def connect(h: SimulatorHandle, user: str = ADMIN, pwd: str | None = None) -> Any:
    ctx = ssl.create_default_context(cafile=str(h.ca_path))
    return SmartConnect(host="localhost", port=h.port, user=user,
                        pwd=pwd if pwd is not None else h.users[user], sslContext=ctx)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    h = start_simulator(small_scenario(), Path(tmp_path_factory.mktemp("vcsim")))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def si(sim: SimulatorHandle) -> Iterator[Any]:
    s = connect(sim)
    yield s
    try:
        Disconnect(s)
    except Exception:
        pass


def find_vm(si: Any, name: str) -> Any:
    from pyVmomi import vim

    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    try:
        for vm in view.view:
            if vm.name == name:
                return vm
    finally:
        view.Destroy()
    raise LookupError(name)
