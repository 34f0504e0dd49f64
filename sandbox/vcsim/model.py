"""The simulated inventory: managed entities, VMs with disks and snapshots.

Each simulated object knows its managed object reference (moref), its vim type and how to
produce each top-level vSphere property as a real ``vim.*`` value. Values are built lazily and
cached per object generation (``gen`` bumps on every change), so repeated inventory collections
of an unchanged inventory cost nothing but a dictionary lookup.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

UTC = dt.UTC
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

BACKINGS = ("flat", "rdm_physical", "rdm_virtual", "sesparse", "sparse")
DISK_MODES = ("persistent", "independent_persistent", "independent_nonpersistent",
              "nonpersistent", "undoable", "append")


def _array(typ: Any, items: list[Any]) -> Any:
    return typ.Array(items)


def now() -> dt.datetime:
    """Current time, timezone-aware, as vSphere reports it."""
    return dt.datetime.now(UTC)


class Entity:
    """A managed object with a moref; subclasses provide ``_build(prop)``."""

    wsdl = "ManagedEntity"
    vim_type: Any = vim.ManagedEntity

    def __init__(self, inv: Inventory, moref: str, name: str, parent: Entity | None) -> None:
        self.inv = inv
        self.moref = moref
        self.name = name
        self.parent = parent
        self.gen = 0
        self._cache: dict[str, tuple[int, Any]] = {}
        self.xml_cache: dict[str, tuple[int, str]] = {}

    def ref(self) -> Any:
        """The pyvmomi managed object reference (no stub: for serialization only)."""
        return self.vim_type(self.moref)

    def touch(self) -> None:
        """Record a change: invalidates cached values and wakes property-collector waiters."""
        self.gen += 1
        self.inv.notify()

    def get(self, prop: str) -> Any:
        """Value of a top-level property (KeyError if the type has no such property)."""
        hit = self._cache.get(prop)
        if hit is not None and hit[0] == self.gen:
            return hit[1]
        gen = self.gen
        val = self._build(prop)
        self._cache[prop] = (gen, val)
        return val

    def _build(self, prop: str) -> Any:
        if prop == "name":
            return self.name
        if prop == "parent":
            return self.parent.ref() if self.parent else None
        if prop == "overallStatus":
            return "green"
        raise KeyError(prop)

    def all_props(self) -> list[str]:
        """Property names reported for ``PropertySpec(all=True)``."""
        return ["name", "parent", "overallStatus"]

    def ancestors(self) -> Iterator[Entity]:
        """This entity, then its parent chain up to the root folder."""
        node: Entity | None = self
        while node is not None:
            yield node
            node = node.parent

    def mo_list(self, typ: Any, items: list[Any]) -> Any:
        """A typed array of morefs, so anyType serialization gives ArrayOfManagedObjectReference."""
        return typ.Array([i.ref() for i in items])


class Folder(Entity):
    wsdl = "Folder"
    vim_type = vim.Folder

    def __init__(self, inv: Inventory, moref: str, name: str, parent: Entity | None,
                 child_type: list[str]) -> None:
        super().__init__(inv, moref, name, parent)
        self.children: list[Entity] = []
        self.child_type = child_type

    def _build(self, prop: str) -> Any:
        if prop == "childEntity":
            return self.mo_list(vim.ManagedEntity, self.children)
        if prop == "childType":
            return self.child_type
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "childEntity", "childType"]


class Datacenter(Entity):
    wsdl = "Datacenter"
    vim_type = vim.Datacenter
    vm_folder: Folder
    host_folder: Folder
    datastore_folder: Folder
    network_folder: Folder

    def _build(self, prop: str) -> Any:
        if prop == "vmFolder":
            return self.vm_folder.ref()
        if prop == "hostFolder":
            return self.host_folder.ref()
        if prop == "datastoreFolder":
            return self.datastore_folder.ref()
        if prop == "networkFolder":
            return self.network_folder.ref()
        if prop == "datastore":
            return self.mo_list(vim.Datastore, list(self.datastore_folder.children))
        if prop == "network":
            return self.mo_list(vim.Network, list(self.network_folder.children))
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "vmFolder", "hostFolder", "datastoreFolder",
                "networkFolder", "datastore", "network"]


class Datastore(Entity):
    wsdl = "Datastore"
    vim_type = vim.Datastore

    def __init__(self, inv: Inventory, moref: str, name: str, parent: Entity | None,
                 ds_type: str, capacity: int, free: int) -> None:
        super().__init__(inv, moref, name, parent)
        self.ds_type = ds_type
        self.capacity = capacity
        self.free = free
        self.uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"ds:{name}")).replace("-", "")[:24]

    def vms(self) -> list[VM]:
        return [v for v in self.inv.vms() if self in v.datastores()]

    def _build(self, prop: str) -> Any:
        if prop == "summary":
            return vim.Datastore.Summary(
                datastore=self.ref(), name=self.name, type=self.ds_type,
                url=f"ds:///vmfs/volumes/{self.uuid}/", capacity=self.capacity,
                freeSpace=self.free, accessible=True, multipleHostAccess=True,
                maintenanceMode="normal")
        if prop == "vm":
            return self.mo_list(vim.VirtualMachine, list(self.vms()))
        if prop == "host":
            return [vim.Datastore.HostMount(key=h.ref(), mountInfo=vim.host.MountInfo(
                accessMode="readWrite", mounted=True, accessible=True))
                for h in self.inv.hosts()]
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "summary", "vm", "host"]


class Network(Entity):
    wsdl = "Network"
    vim_type = vim.Network

    def _build(self, prop: str) -> Any:
        if prop == "summary":
            return vim.Network.Summary(network=self.ref(), name=self.name, accessible=True,
                                       ipPoolName="")
        if prop == "vm":
            return self.mo_list(vim.VirtualMachine,
                                [v for v in self.inv.vms() if self in v.networks()])
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "summary", "vm"]


class ComputeResource(Entity):
    """A cluster (ClusterComputeResource) or a standalone host's ComputeResource."""

    wsdl = "ClusterComputeResource"
    vim_type: Any = vim.ClusterComputeResource

    def __init__(self, inv: Inventory, moref: str, name: str, parent: Entity | None,
                 cluster: bool) -> None:
        super().__init__(inv, moref, name, parent)
        self.hosts: list[Host] = []
        if not cluster:
            self.wsdl = "ComputeResource"
            self.vim_type = vim.ComputeResource

    def _build(self, prop: str) -> Any:
        if prop == "host":
            return self.mo_list(vim.HostSystem, list(self.hosts))
        if prop == "datastore":
            return self.mo_list(vim.Datastore, list(self.inv.datastores()))
        if prop == "network":
            return self.mo_list(vim.Network, list(self.inv.networks()))
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "host", "datastore", "network"]


class Host(Entity):
    wsdl = "HostSystem"
    vim_type = vim.HostSystem

    def vms(self) -> list[VM]:
        return [v for v in self.inv.vms() if v.host is self]

    def _build(self, prop: str) -> Any:
        if prop == "runtime":
            return vim.host.RuntimeInfo(connectionState="connected", powerState="poweredOn",
                                        inMaintenanceMode=False)
        if prop == "summary":
            return vim.host.Summary(
                host=self.ref(), overallStatus="green", rebootRequired=False,
                quickStats=vim.host.Summary.QuickStats(),
                runtime=self.get("runtime"),
                config=vim.host.Summary.ConfigSummary(
                    name=self.name, port=443, vmotionEnabled=True, faultToleranceEnabled=False,
                    product=self.inv.about()))
        if prop == "vm":
            return self.mo_list(vim.VirtualMachine, list(self.vms()))
        if prop == "datastore":
            return self.mo_list(vim.Datastore, list(self.inv.datastores()))
        if prop == "network":
            return self.mo_list(vim.Network, list(self.inv.networks()))
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "runtime", "summary", "vm", "datastore", "network"]


@dataclass
class Disk:
    """A VM's virtual disk; the data lives in the DiskStore (created lazily on first use)."""

    key: int
    unit: int
    controller_key: int
    capacity: int  # bytes, whole KiB
    backing: str
    mode: str
    thin: bool
    datastore: Datastore
    folder: str
    name: str
    uuid: str
    guest_path: str = ""
    guest_free: int | None = None
    store_disk: Any = None

    @property
    def label(self) -> str:
        return f"Hard disk {self.key - 2000 + 1}"

    @property
    def independent(self) -> bool:
        return self.mode.startswith("independent")

    @property
    def snapshottable(self) -> bool:
        """Disks whose layers a VM snapshot freezes (FlatVer2, not independent)."""
        return self.backing == "flat" and not self.independent

    @property
    def path_hint(self) -> str:
        return f"[{self.datastore.name}] {self.folder}/{self.name}.vmdk"


@dataclass
class Nic:
    key: int
    mac: str
    network: Network
    kind: str = "vmxnet3"


@dataclass
class Snapshot:
    """A VM snapshot: its frozen disk layers and the VM config as it was."""

    moref: str
    vm: VM
    name: str
    description: str
    sid: int
    created: dt.datetime
    power_state: str
    parent: Snapshot | None
    points: dict[int, Any] = field(default_factory=dict)   # deviceKey -> FrozenPoint
    config: Any = None
    children: list[Snapshot] = field(default_factory=list)

    def ref(self) -> Any:
        return vim.vm.Snapshot(self.moref)

    def tree(self) -> Any:
        return vim.vm.SnapshotTree(
            snapshot=self.ref(), vm=self.vm.ref(), name=self.name,
            description=self.description, id=self.sid, createTime=self.created,
            state=self.power_state, quiesced=False, replaySupported=False,
            childSnapshotList=[c.tree() for c in self.children])


class SnapshotEntity(Entity):
    """The VirtualMachineSnapshot managed object (properties config, childSnapshot, vm)."""

    wsdl = "VirtualMachineSnapshot"
    vim_type = vim.vm.Snapshot

    def __init__(self, inv: Inventory, snap: Snapshot) -> None:
        super().__init__(inv, snap.moref, snap.name, None)
        self.snap = snap

    def _build(self, prop: str) -> Any:
        if prop == "config":
            return self.snap.config
        if prop == "childSnapshot":
            return self.mo_list(vim.vm.Snapshot, list(self.snap.children))
        if prop == "vm":
            return self.snap.vm.ref()
        raise KeyError(prop)

    def all_props(self) -> list[str]:
        return ["config", "childSnapshot", "vm"]


class VM(Entity):
    wsdl = "VirtualMachine"
    vim_type = vim.VirtualMachine

    def __init__(self, inv: Inventory, moref: str, name: str, parent: Entity | None) -> None:
        super().__init__(inv, moref, name, parent)
        self.host: Host | None = None
        self.datastore: Datastore | None = None
        self.guest_id = "otherGuest64"
        self.guest_full_name = "Other (64-bit)"
        self.firmware = "bios"
        self.cpus = 1
        self.memory_mb = 1024
        self.hw_version = "vmx-19"
        self.power_state = "poweredOff"
        self.template = False
        self.client = False
        self.instance_uuid = str(uuidlib.uuid4())
        self.bios_uuid = str(uuidlib.uuid4())
        self.tools_status = "toolsOk"
        self.ip: str | None = None
        self.hostname: str | None = None
        self.cbt = False
        self.cbt_active = False
        self.disks: list[Disk] = []
        self.nics: list[Nic] = []
        self.roots: list[Snapshot] = []
        self.current: Snapshot | None = None
        self.consolidation_needed = False
        self.cbt_stuck = False   # CBT configured but a stun never activates it (ctk file trouble)
        self.busy: str | None = None   # name of a running exclusive task (e.g. consolidation)
        self.busy_task: Any = None
        self.recent_tasks: list[Any] = []   # TaskEntity objects, as vCenter's recentTask
        self.lock = threading.RLock()
        self.change_version = 0

    # --- helpers -------------------------------------------------------------------------
    def datastores(self) -> list[Datastore]:
        out: list[Datastore] = []
        for d in [self.datastore, *[k.datastore for k in self.disks]]:
            if d is not None and d not in out:
                out.append(d)
        return out

    def networks(self) -> list[Network]:
        out: list[Network] = []
        for n in self.nics:
            if n.network not in out:
                out.append(n.network)
        return out

    def disk_by_key(self, key: int) -> Disk:
        for d in self.disks:
            if d.key == key:
                return d
        raise KeyError(key)

    def snapshots(self) -> Iterator[Snapshot]:
        stack = list(self.roots)
        while stack:
            s = stack.pop()
            yield s
            stack.extend(s.children)

    def changed(self) -> None:
        self.change_version += 1
        self.touch()

    # --- vim values ----------------------------------------------------------------------
    def disk_values(self, d: Disk, file: str | None = None, change_id: str | None = None
                    ) -> dict[str, Any]:
        """Plain values of a VirtualDisk device (input of build_disk and of XML templates)."""
        live = d.store_disk.live_file if d.store_disk is not None else d.path_hint
        if change_id is None:
            change_id = self.inv.live_change_id(d) if self.cbt_active else None
        hexid = d.uuid.replace("-", "")
        return {"kind": d.backing, "key": d.key, "ctl": d.controller_key, "unit": d.unit,
                "label": d.label, "summary": f"{d.capacity // KiB:,} KB",
                "file": file or live, "ds": d.datastore.moref, "mode": d.mode, "thin": d.thin,
                "uuid": d.uuid, "change": change_id or None,
                "content": uuidlib.uuid5(uuidlib.NAMESPACE_OID, d.uuid).hex,
                "devname": f"vml.0200000000{hexid[:24]}", "lun": "0200000000" + hexid,
                "kb": d.capacity // KiB, "bytes": d.capacity}

    def disk_device(self, d: Disk, file: str | None = None, change_id: str | None = None
                    ) -> Any:
        """The VirtualDisk device; ``file``/``change_id`` override for a snapshot's config."""
        return build_disk(self.disk_values(d, file, change_id))

    def nic_values(self, n: Nic) -> dict[str, Any]:
        return {"kind": n.kind, "key": n.key, "mac": n.mac,
                "label": f"Network adapter {n.key - 4000 + 1}", "net_name": n.network.name,
                "net": n.network.moref, "connected": self.power_state == "poweredOn"}

    def devices(self, overrides: dict[int, tuple[str, str]] | None = None) -> list[Any]:
        """The full device list: SCSI controller, disks and NICs."""
        devs: list[Any] = [build_controller({"disks": [d.key for d in self.disks]})]
        for d in self.disks:
            if overrides and d.key in overrides:
                devs.append(self.disk_device(d, *overrides[d.key]))
            else:
                devs.append(self.disk_device(d))
        devs.extend(build_nic(self.nic_values(n)) for n in self.nics)
        return devs

    def devices_xml(self, version: str) -> str:
        """config.hardware.device as a <propSet>, rendered from templates (see fastxml)."""
        from sandbox.vcsim.fastxml import render

        dev_t = vim.vm.device.VirtualDevice
        parts = ['<propSet><name>config.hardware.device</name>'
                 '<val xsi:type="ArrayOfVirtualDevice">',
                 render(build_controller, "ctl", {"disks": [d.key for d in self.disks]},
                        "VirtualDevice", dev_t, version)]
        for d in self.disks:
            v = self.disk_values(d)
            parts.append(render(build_disk, "disk:" + v["kind"], v, "VirtualDevice", dev_t,
                                version))
        for n in self.nics:
            v = self.nic_values(n)
            parts.append(render(build_nic, "nic:" + v["kind"], v, "VirtualDevice", dev_t,
                                version))
        parts.append("</val></propSet>")
        return "".join(parts)

    FAST_PATHS: dict[str, Callable[[VM], Any]] = {}

    def fast_value(self, path: str) -> Any:
        """Common nested properties without building the whole ConfigInfo (KeyError if not)."""
        return VM.FAST_PATHS[path](self)

    def config_info(self, overrides: dict[int, tuple[str, str]] | None = None) -> Any:
        ds = self.datastore.name if self.datastore else "datastore1"
        extra = [vim.option.OptionValue(key="ctkEnabled", value=str(self.cbt).upper())]
        if self.client:
            extra.append(vim.option.OptionValue(key="guestinfo.snapship.role", value="client"))
        return vim.vm.ConfigInfo(
            changeVersion=str(self.change_version), modified=now(), name=self.name,
            guestFullName=self.guest_full_name, version=self.hw_version, uuid=self.bios_uuid,
            instanceUuid=self.instance_uuid, template=self.template, guestId=self.guest_id,
            alternateGuestName="", annotation="", firmware=self.firmware,
            changeTrackingEnabled=self.cbt, locationId=self.instance_uuid,
            files=vim.vm.FileInfo(vmPathName=f"[{ds}] {self.name}/{self.name}.vmx",
                                  snapshotDirectory=f"[{ds}] {self.name}/",
                                  suspendDirectory=f"[{ds}] {self.name}/",
                                  logDirectory=f"[{ds}] {self.name}/"),
            hardware=vim.vm.VirtualHardware(
                numCPU=self.cpus, numCoresPerSocket=1, memoryMB=self.memory_mb,
                device=self.devices(overrides)),
            extraConfig=extra, cpuHotAddEnabled=False, memoryHotAddEnabled=False,
            flags=vim.vm.FlagInfo(), defaultPowerOps=vim.vm.DefaultPowerOpInfo())

    def runtime(self) -> Any:
        return vim.vm.RuntimeInfo(
            host=self.host.ref() if self.host else None, connectionState="connected",
            powerState=self.power_state, consolidationNeeded=self.consolidation_needed,
            faultToleranceState="notConfigured", toolsInstallerMounted=False,
            onlineStandby=False, numMksConnections=0, recordReplayState="inactive",
            maxMemoryUsage=self.memory_mb,
            bootTime=now() if self.power_state == "poweredOn" else None)

    def tools(self) -> tuple[str, str]:
        """(guest.toolsStatus, guest.toolsRunningStatus) for the current power state."""
        on = self.power_state == "poweredOn"
        status = self.tools_status if on else (
            "toolsNotRunning" if self.tools_status != "toolsNotInstalled" else self.tools_status)
        running = ("guestToolsRunning" if on and self.tools_status == "toolsOk"
                   else "guestToolsNotRunning")
        return status, running

    def guest_disks(self) -> Any:
        on = self.power_state == "poweredOn"
        return _array(vim.vm.GuestInfo.DiskInfo, [vim.vm.GuestInfo.DiskInfo(
            diskPath=d.guest_path or f"/disk{d.key - 2000}", capacity=d.capacity,
            freeSpace=d.guest_free, mappings=[vim.vm.GuestInfo.VirtualDiskMapping(key=d.key)])
            for d in self.disks if on and d.guest_free is not None])

    def vmx_path(self) -> str:
        ds = self.datastore.name if self.datastore else "datastore1"
        return f"[{ds}] {self.name}/{self.name}.vmx"

    def guest(self) -> Any:
        on = self.power_state == "poweredOn"
        disks = list(self.guest_disks())
        tools, running = self.tools()
        return vim.vm.GuestInfo(
            toolsStatus=tools, toolsRunningStatus=running,
            guestId=self.guest_id, guestFullName=self.guest_full_name,
            hostName=self.hostname if on else None, ipAddress=self.ip if on else None,
            guestState="running" if on else "notRunning", disk=disks,
            net=[vim.vm.GuestInfo.NicInfo(network=n.network.name, macAddress=n.mac,
                                          connected=on, deviceConfigId=n.key,
                                          ipAddress=[self.ip] if on and self.ip else [])
                 for n in self.nics])

    def _build(self, prop: str) -> Any:
        if prop == "config":
            return self.config_info()
        if prop == "runtime":
            return self.runtime()
        if prop == "guest":
            return self.guest()
        if prop == "summary":
            cfg = vim.vm.Summary.ConfigSummary(
                name=self.name, template=self.template,
                vmPathName=self.get("config").files.vmPathName,
                memorySizeMB=self.memory_mb, numCpu=self.cpus, numEthernetCards=len(self.nics),
                numVirtualDisks=len(self.disks), uuid=self.bios_uuid,
                instanceUuid=self.instance_uuid, guestId=self.guest_id,
                guestFullName=self.guest_full_name, annotation="", hwVersion=self.hw_version)
            g = self.get("guest")
            return vim.vm.Summary(
                vm=self.ref(), runtime=self.get("runtime"), config=cfg,
                guest=vim.vm.Summary.GuestSummary(
                    guestId=self.guest_id, guestFullName=self.guest_full_name,
                    toolsStatus=g.toolsStatus, hostName=g.hostName, ipAddress=g.ipAddress),
                storage=vim.vm.Summary.StorageSummary(
                    committed=sum(d.capacity for d in self.disks), uncommitted=0, unshared=0,
                    timestamp=now()),
                quickStats=vim.vm.Summary.QuickStats(guestHeartbeatStatus="green"),
                overallStatus="green")
        if prop == "snapshot":
            if not self.roots:
                return None
            return vim.vm.SnapshotInfo(
                currentSnapshot=self.current.ref() if self.current else None,
                rootSnapshotList=[s.tree() for s in self.roots])
        if prop == "rootSnapshot":
            return _array(vim.vm.Snapshot, [s.ref() for s in self.roots])
        if prop == "datastore":
            return self.mo_list(vim.Datastore, list(self.datastores()))
        if prop == "network":
            return self.mo_list(vim.Network, list(self.networks()))
        if prop == "resourcePool":
            return None
        if prop == "recentTask":
            # Like vCenter: the VM's tasks of the last ten minutes, running ones included.
            cutoff = now() - dt.timedelta(minutes=10)
            self.recent_tasks = [
                t for t in self.recent_tasks if t.completed is None or t.completed > cutoff
            ]
            return _array(vim.Task, [t.ref() for t in self.recent_tasks])
        return super()._build(prop)

    def all_props(self) -> list[str]:
        return [*super().all_props(), "config", "runtime", "guest", "summary", "snapshot",
                "rootSnapshot", "datastore", "network", "recentTask"]


def build_disk(v: dict[str, Any]) -> Any:
    """A vim VirtualDisk from disk_values()."""
    ds = vim.Datastore(v["ds"])
    kind = v["kind"]
    b: Any
    if kind == "flat":
        b = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=v["file"], datastore=ds, diskMode=v["mode"], thinProvisioned=v["thin"],
            eagerlyScrub=False, split=False, writeThrough=False, uuid=v["uuid"],
            changeId=v["change"], contentId=v["content"], digestEnabled=False,
            sharing="sharingNone")
    elif kind.startswith("rdm"):
        b = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
            fileName=v["file"], datastore=ds, diskMode=v["mode"],
            compatibilityMode="physicalMode" if kind == "rdm_physical" else "virtualMode",
            deviceName=v["devname"], lunUuid=v["lun"], uuid=v["uuid"], changeId=v["change"],
            sharing="sharingNone")
    elif kind == "sesparse":
        b = vim.vm.device.VirtualDisk.SeSparseBackingInfo(
            fileName=v["file"], datastore=ds, diskMode=v["mode"], writeThrough=False,
            uuid=v["uuid"], changeId=v["change"], grainSize=4)
    else:
        b = vim.vm.device.VirtualDisk.SparseVer2BackingInfo(
            fileName=v["file"], datastore=ds, diskMode=v["mode"], split=False,
            writeThrough=False, spaceUsedInKB=0, uuid=v["uuid"], changeId=v["change"])
    return vim.vm.device.VirtualDisk(
        key=v["key"], controllerKey=v["ctl"], unitNumber=v["unit"],
        deviceInfo=vim.Description(label=v["label"], summary=v["summary"]),
        backing=b, capacityInKB=v["kb"], capacityInBytes=v["bytes"],
        shares=vim.SharesInfo(shares=1000, level="normal"),
        storageIOAllocation=vim.StorageResourceManager.IOAllocationInfo(limit=-1))


def build_controller(v: dict[str, Any]) -> Any:
    return vim.vm.device.ParaVirtualSCSIController(
        key=1000, busNumber=0, sharedBus="noSharing", scsiCtlrUnitNumber=7,
        deviceInfo=vim.Description(label="SCSI controller 0", summary="VMware paravirtual SCSI"),
        device=list(v["disks"]))


def build_nic(v: dict[str, Any]) -> Any:
    cls = vim.vm.device.VirtualVmxnet3 if v["kind"] == "vmxnet3" else vim.vm.device.VirtualE1000
    return cls(
        key=v["key"], macAddress=v["mac"], addressType="assigned",
        deviceInfo=vim.Description(label=v["label"], summary=v["net_name"]),
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=v["net_name"], network=vim.Network(v["net"])),
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(
            connected=v["connected"], startConnected=True, allowGuestControl=True,
            status="ok"))


def _host_ref(vm: VM) -> Any:
    return vm.host.ref() if vm.host else None


VM.FAST_PATHS.update({
    "config.name": lambda vm: vm.name,
    "config.instanceUuid": lambda vm: vm.instance_uuid,
    "config.uuid": lambda vm: vm.bios_uuid,
    "config.version": lambda vm: vm.hw_version,
    "config.template": lambda vm: vm.template,
    "config.guestId": lambda vm: vm.guest_id,
    "config.guestFullName": lambda vm: vm.guest_full_name,
    "config.firmware": lambda vm: vm.firmware,
    "config.changeTrackingEnabled": lambda vm: vm.cbt,
    "config.hardware.numCPU": lambda vm: vm.cpus,
    "config.hardware.memoryMB": lambda vm: vm.memory_mb,
    "config.files.vmPathName": lambda vm: vm.vmx_path(),
    "guest.toolsStatus": lambda vm: vm.tools()[0],
    "guest.toolsRunningStatus": lambda vm: vm.tools()[1],
    "guest.disk": lambda vm: vm.guest_disks(),
    "runtime.powerState": lambda vm: vm.power_state,
    "runtime.host": _host_ref,
    "runtime.connectionState": lambda vm: "connected",
    "runtime.consolidationNeeded": lambda vm: vm.consolidation_needed,
    "summary.config.name": lambda vm: vm.name,
    "summary.config.instanceUuid": lambda vm: vm.instance_uuid,
    "summary.config.uuid": lambda vm: vm.bios_uuid,
    "summary.config.template": lambda vm: vm.template,
    "summary.config.numVirtualDisks": lambda vm: len(vm.disks),
    "summary.runtime.powerState": lambda vm: vm.power_state,
    "summary.runtime.host": _host_ref,
})


class Inventory:
    """All simulated objects, their ids, and the change notification used by WaitForUpdates."""

    def __init__(self, about: Callable[[], Any], live_change_id: Callable[[Disk], str | None]
                 ) -> None:
        self.objects: dict[str, Entity] = {}
        self.by_type: dict[type, dict[str, Entity]] = {}
        self.lock = threading.RLock()
        self.cond = threading.Condition(threading.Lock())
        self.update_seq = 0
        self._counters: dict[str, int] = {}
        self.about = about
        self.live_change_id = live_change_id
        self.root: Folder = Folder(self, "group-d1", "Datacenters", None, [
            "Folder", "Datacenter"])
        self.add(self.root)

    def next_id(self, prefix: str) -> str:
        with self.lock:
            n = self._counters.get(prefix, 0) + 1
            self._counters[prefix] = n
            return f"{prefix}{n}"

    def add(self, e: Entity) -> Entity:
        self.objects[e.moref] = e
        self.by_type.setdefault(type(e), {})[e.moref] = e
        return e

    def remove(self, moref: str) -> None:
        e = self.objects.pop(moref, None)
        if e is not None:
            self.by_type.get(type(e), {}).pop(moref, None)

    def notify(self) -> None:
        with self.cond:
            self.update_seq += 1
            self.cond.notify_all()

    def of_type(self, cls: type) -> list[Any]:
        out: list[Any] = []
        for t, objs in list(self.by_type.items()):
            if issubclass(t, cls):
                out.extend(list(objs.values()))
        return out

    def vms(self) -> list[VM]:
        return self.of_type(VM)

    def hosts(self) -> list[Host]:
        return self.of_type(Host)

    def datastores(self) -> list[Datastore]:
        return self.of_type(Datastore)

    def networks(self) -> list[Network]:
        return self.of_type(Network)

    def find(self, cls: type, name: str) -> Any:
        for o in self.of_type(cls):
            if o.name == name:
                return o
        raise KeyError(f"no {cls.__name__} named {name!r}")

    def get_ref(self, ref: Any) -> Entity:
        """Resolve a pyvmomi moref to the simulated object (ManagedObjectNotFound if gone)."""
        moref = ref._moId if hasattr(ref, "_moId") else str(ref)
        obj = self.objects.get(moref)
        if obj is None:
            raise vmodl.fault.ManagedObjectNotFound(obj=ref, msg=f"object {moref} not found")
        return obj
