"""Builders for pyvmomi data objects shaped like what vCenter returns (unit tests only)."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

from pyVmomi import vim

Disk = vim.vm.device.VirtualDisk


def ds_ref(moref: str) -> Any:
    return vim.Datastore(moref)


def flat_disk(
    key: int = 2000,
    *,
    label: str = "Hard disk 1",
    capacity: int = 16 * 1024**3,
    mode: str = "persistent",
    file_name: str = "[ds1] vm-1/vm-1.vmdk",
    uuid: str = "6000C291-0000-0000-0000-000000000001",
    datastore: str = "datastore-1",
    change_id: str | None = None,
    sharing: str | None = "sharingNone",
    unit: int = 0,
    parent: Any = None,
) -> Any:
    backing = Disk.FlatVer2BackingInfo(
        fileName=file_name,
        diskMode=mode,
        uuid=uuid,
        datastore=ds_ref(datastore),
        changeId=change_id,
        sharing=sharing,
        parent=parent,
    )
    return Disk(
        key=key,
        deviceInfo=vim.Description(label=label, summary=""),
        capacityInKB=capacity // 1024,
        capacityInBytes=capacity,
        backing=backing,
        controllerKey=1000,
        unitNumber=unit,
    )


def rdm_disk(key: int = 2001, *, mode: str = "physicalMode") -> Any:
    backing = Disk.RawDiskMappingVer1BackingInfo(
        fileName="[ds1] vm-1/vm-1_rdm.vmdk",
        compatibilityMode=mode,
        diskMode="independent_persistent",
        deviceName="vml.0200000000",
        lunUuid="0200000000",
        datastore=ds_ref("datastore-1"),
    )
    return Disk(
        key=key,
        deviceInfo=vim.Description(label="Hard disk 2", summary=""),
        capacityInKB=1024 * 1024,
        capacityInBytes=1024**3,
        backing=backing,
        controllerKey=1000,
        unitNumber=1,
    )


def sparse_disk(key: int = 2002) -> Any:
    backing = Disk.SparseVer2BackingInfo(
        fileName="[ds1] vm-1/vm-1_sparse.vmdk",
        diskMode="persistent",
        datastore=ds_ref("datastore-1"),
    )
    return Disk(
        key=key,
        deviceInfo=vim.Description(label="Hard disk 3", summary=""),
        capacityInKB=1024,
        capacityInBytes=1024 * 1024,
        backing=backing,
        controllerKey=1000,
        unitNumber=2,
    )


def vmxnet3(key: int = 4000, *, network: str = "VM Network", mac: str = "00:50:56:aa:bb:01") -> Any:
    return vim.vm.device.VirtualVmxnet3(
        key=key,
        deviceInfo=vim.Description(label="Network adapter 1", summary=network),
        macAddress=mac,
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=network, network=vim.Network("network-1")
        ),
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(
            connected=True, startConnected=True, allowGuestControl=True
        ),
    )


def dvs_nic(key: int = 4001, *, portgroup_key: str = "dvportgroup-9") -> Any:
    port = vim.dvs.PortConnection(switchUuid="50 2a", portgroupKey=portgroup_key)
    return vim.vm.device.VirtualE1000e(
        key=key,
        deviceInfo=vim.Description(label="Network adapter 2", summary=""),
        macAddress="00:50:56:aa:bb:02",
        backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port),
    )


def snapshot_tree(*names: str, nested: bool = True) -> Any:
    """SnapshotInfo with a chain (each a child of the previous) or siblings."""
    nodes = [
        vim.vm.SnapshotTree(
            name=n,
            snapshot=vim.vm.Snapshot(f"snapshot-{i}"),
            vm=vim.VirtualMachine("vm-1"),
            createTime=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
            id=i,
            description="",
            state="poweredOff",
            quiesced=False,
            childSnapshotList=[],
        )
        for i, n in enumerate(names, start=1)
    ]
    if nested:
        for parent, child in itertools.pairwise(nodes):
            parent.childSnapshotList = [child]
        roots = nodes[:1]
    else:
        roots = nodes
    return vim.vm.SnapshotInfo(rootSnapshotList=roots)


def vm_props(
    *,
    devices: list[Any] | None = None,
    version: str = "vmx-19",
    template: bool = False,
    snapshot: Any = None,
    power: str = "poweredOn",
    tools: str = "guestToolsRunning",
    guest_disks: list[tuple[str, int, int]] | None = None,
    instance_uuid: str = "5003a1b2-0000-4000-8000-000000000001",
    bios_uuid: str = "4203c4d5-1111-2222-3333-444455556666",
    consolidation_needed: bool = False,
    datastores: tuple[str, ...] = ("datastore-1",),
) -> dict[str, Any]:
    """A PropertyCollector answer for inventory.VM_PATHS, built from vim data objects."""
    props: dict[str, Any] = {
        "name": "web-01",
        "config.instanceUuid": instance_uuid,
        "config.uuid": bios_uuid,
        "config.template": template,
        "config.version": version,
        "config.guestId": "rhel8_64Guest",
        "config.guestFullName": "Red Hat Enterprise Linux 8 (64-bit)",
        "config.firmware": "efi",
        "config.hardware.numCPU": 4,
        "config.hardware.memoryMB": 8192,
        "config.hardware.device": devices if devices is not None else [flat_disk(), vmxnet3()],
        "config.changeTrackingEnabled": False,
        "runtime.powerState": power,
        "runtime.connectionState": "connected",
        "runtime.host": vim.HostSystem("host-1"),
        "runtime.consolidationNeeded": consolidation_needed,
        "datastore": [ds_ref(d) for d in datastores],
        "guest.toolsRunningStatus": tools,
        "guest.toolsStatus": "toolsOk",
    }
    if snapshot is not None:
        props["snapshot"] = snapshot
    if guest_disks is not None:
        props["guest.disk"] = [
            vim.vm.GuestInfo.DiskInfo(diskPath=p, capacity=c, freeSpace=f)
            for p, c, f in guest_disks
        ]
    return props
