"""Plain facts about vCenter objects, as discovery records them.

These dataclasses hold only str/int/bool/float/lists so they cross Temporal activity boundaries
and JSON unchanged; nothing here imports pyvmomi. ``inventory.py`` fills them from
PropertyCollector answers; eligibility and the later conversion read only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLAT_VER2_BACKING = "VirtualDiskFlatVer2BackingInfo"
RDM_BACKING = "VirtualDiskRawDiskMappingVer1BackingInfo"


@dataclass(frozen=True)
class DatastoreFacts:
    moref: str
    name: str
    type: str  # summary.type: VMFS, NFS, NFS41, vsan, VVOL, PMEM, ...
    datacenter: str | None = None


@dataclass(frozen=True)
class HostFacts:
    moref: str
    name: str
    datacenter: str | None = None


@dataclass(frozen=True)
class DiskFacts:
    device_key: int
    label: str
    capacity_bytes: int
    backing_type: str  # WSDL type name, e.g. VirtualDiskFlatVer2BackingInfo
    disk_mode: str | None  # persistent, independent_persistent, independent_nonpersistent, ...
    file_name: str | None  # "[datastore] folder/disk.vmdk" (the live layer)
    backing_uuid: str | None
    controller_key: int | None
    unit_number: int | None
    change_id: str | None = None
    datastore_moref: str | None = None
    datastore_name: str | None = None
    datastore_type: str | None = None
    sharing: str | None = None  # sharingNone / sharingMultiWriter
    compatibility_mode: str | None = None  # RDM only: physicalMode / virtualMode


@dataclass(frozen=True)
class NicFacts:
    device_key: int
    label: str
    mac_address: str | None
    network_name: str | None
    adapter_type: str  # WSDL type, e.g. VirtualVmxnet3
    connected: bool | None = None


@dataclass(frozen=True)
class GuestDiskFacts:
    path: str
    capacity_bytes: int
    free_bytes: int


@dataclass
class VmFacts:
    moref: str
    name: str
    instance_uuid: str | None = None
    bios_uuid: str | None = None
    template: bool = False
    hardware_version: str | None = None  # "vmx-19"
    guest_id: str | None = None
    guest_full_name: str | None = None
    firmware: str | None = None  # bios / efi
    num_cpu: int | None = None
    memory_mb: int | None = None
    power_state: str | None = None  # poweredOn / poweredOff / suspended
    connection_state: str | None = None  # connected / disconnected / orphaned / inaccessible ...
    host_moref: str | None = None
    host_name: str | None = None
    datacenter: str | None = None
    vm_path_name: str | None = None
    datastores: list[DatastoreFacts] = field(default_factory=list)
    nics: list[NicFacts] = field(default_factory=list)
    disks: list[DiskFacts] = field(default_factory=list)
    snapshot_names: list[str] = field(default_factory=list)
    consolidation_needed: bool = False
    change_tracking_enabled: bool | None = None
    guest_disks: list[GuestDiskFacts] = field(default_factory=list)
    tools_status: str | None = None  # toolsOk / toolsOld / toolsNotRunning / toolsNotInstalled
    tools_running_status: str | None = None  # guestToolsRunning / guestToolsNotRunning


@dataclass
class Inventory:
    """One full read of vCenter's inventory and what it cost."""

    vms: list[VmFacts]
    hosts: dict[str, HostFacts]
    datastores: dict[str, DatastoreFacts]
    datacenters: dict[str, str]  # moref -> name
    round_trips: int
    duration_s: float
    objects_read: int
