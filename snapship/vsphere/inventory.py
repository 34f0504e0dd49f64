"""Full-inventory read: every VM with the facts discovery needs, in a handful of round trips.

One ContainerView over the root folder holding VMs, hosts, datastores, networks, datacenters,
folders and compute resources; one RetrievePropertiesEx with a PropertySpec per type, paged with
ContinueRetrievePropertiesEx. 10,000 VMs cost about ten pages, never a call per VM. Names of hosts,
datastores, networks and datacenters are resolved from the same answer (the parent chain gives
each object's datacenter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pyVmomi import vim, vmodl

from snapship.vsphere.facts import (
    DatastoreFacts,
    DiskFacts,
    GuestDiskFacts,
    HostFacts,
    Inventory,
    NicFacts,
    VmFacts,
)
from snapship.vsphere.fastxml import is_a, retrieve_paged_fast, vim_type
from snapship.vsphere.props import PropertyCollector, object_props, retrieve_paged
from snapship.vsphere.session import VcenterSession

log = logging.getLogger(__name__)

VM_PATHS: tuple[str, ...] = (
    "name",
    "parent",  # unset for VMs inside a vApp: their datacenter comes from the host
    "config.instanceUuid",
    "config.uuid",
    "config.template",
    "config.version",
    "config.guestId",
    "config.guestFullName",
    "config.firmware",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "config.files.vmPathName",
    "runtime.powerState",
    "runtime.connectionState",
    "runtime.host",
    "runtime.consolidationNeeded",
    "datastore",
    "snapshot",
    "guest.disk",
    "guest.toolsStatus",
    "guest.toolsRunningStatus",
)

_OTHER_PATHS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (vim.HostSystem, ("name", "parent")),
    (vim.Datastore, ("name", "summary.type", "parent")),
    (vim.Network, ("name",)),
    (vim.Datacenter, ("name", "parent")),
    (vim.Folder, ("parent",)),
    (vim.ComputeResource, ("parent",)),
    (vim.ResourcePool, ("parent",)),
)


def _moid(ref: Any) -> str | None:
    return None if ref is None else str(ref._moId)


def wsdl_name(obj: Any) -> str:
    """WSDL type name of a pyvmomi object or a fastxml Light ("VirtualDiskFlatVer2BackingInfo")."""
    wsdl = getattr(obj, "_wsdl", None)
    if isinstance(wsdl, str):
        return wsdl
    return str(getattr(type(obj), "_wsdlName", type(obj).__name__))


def snapshot_names(snapshot_info: Any) -> list[str]:
    """Names of every snapshot in a ``vim.vm.SnapshotInfo`` tree, depth first."""
    names: list[str] = []
    stack = list(reversed(getattr(snapshot_info, "rootSnapshotList", None) or []))
    while stack:
        node = stack.pop()
        names.append(str(node.name))
        stack.extend(reversed(node.childSnapshotList or []))
    return names


def disk_facts_from_device(
    dev: Any, datastores: Mapping[str, DatastoreFacts] | None = None
) -> DiskFacts:
    """DiskFacts from a ``vim.vm.device.VirtualDisk`` (live VM config or a snapshot's config)."""
    backing = dev.backing
    ds_moref = _moid(getattr(backing, "datastore", None))
    ds = (datastores or {}).get(ds_moref) if ds_moref else None
    label = dev.deviceInfo.label if dev.deviceInfo is not None else f"disk {dev.key}"
    capacity = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
    return DiskFacts(
        device_key=int(dev.key),
        label=str(label),
        capacity_bytes=int(capacity),
        backing_type=wsdl_name(backing),
        disk_mode=getattr(backing, "diskMode", None),
        file_name=getattr(backing, "fileName", None),
        backing_uuid=getattr(backing, "uuid", None),
        controller_key=dev.controllerKey,
        unit_number=dev.unitNumber,
        change_id=getattr(backing, "changeId", None),
        datastore_moref=ds_moref,
        datastore_name=ds.name if ds else None,
        datastore_type=ds.type if ds else None,
        sharing=getattr(backing, "sharing", None),
        compatibility_mode=getattr(backing, "compatibilityMode", None),
    )


def _network_name(backing: Any, networks: Mapping[str, str]) -> str | None:
    if is_a(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        return backing.deviceName or networks.get(_moid(backing.network) or "")
    if is_a(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey if backing.port is not None else None
        # vCenter uses the portgroup's moref id as its key.
        return networks.get(key or "", key)
    if is_a(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        return backing.opaqueNetworkId
    return None


def nic_facts_from_device(dev: Any, networks: Mapping[str, str] | None = None) -> NicFacts:
    label = dev.deviceInfo.label if dev.deviceInfo is not None else f"nic {dev.key}"
    return NicFacts(
        device_key=int(dev.key),
        label=str(label),
        mac_address=dev.macAddress,
        network_name=_network_name(dev.backing, networks or {}),
        adapter_type=wsdl_name(dev),
        connected=dev.connectable.connected if dev.connectable is not None else None,
    )


def vm_facts_from_properties(
    moref: str,
    props: Mapping[str, Any],
    *,
    hosts: Mapping[str, HostFacts] | None = None,
    datastores: Mapping[str, DatastoreFacts] | None = None,
    networks: Mapping[str, str] | None = None,
    datacenter: str | None = None,
) -> VmFacts:
    """VmFacts from a PropertyCollector answer for the paths in VM_PATHS."""
    hosts = hosts or {}
    datastores = datastores or {}
    host_moref = _moid(props.get("runtime.host"))
    host = hosts.get(host_moref) if host_moref else None
    disks: list[DiskFacts] = []
    nics: list[NicFacts] = []
    for dev in props.get("config.hardware.device") or ():
        if is_a(dev, vim.vm.device.VirtualDisk):
            disks.append(disk_facts_from_device(dev, datastores))
        elif is_a(dev, vim.vm.device.VirtualEthernetCard):
            nics.append(nic_facts_from_device(dev, networks))
    vm_datastores = []
    for ref in props.get("datastore") or ():
        ds_moref = str(ref._moId)
        vm_datastores.append(datastores.get(ds_moref) or DatastoreFacts(ds_moref, ds_moref, ""))
    guest_disks = [
        GuestDiskFacts(
            path=str(d.diskPath or ""),
            capacity_bytes=int(d.capacity or 0),
            free_bytes=int(d.freeSpace or 0),
        )
        for d in props.get("guest.disk") or ()
    ]

    def _str(key: str) -> str | None:
        val = props.get(key)
        return None if val is None else str(val)

    return VmFacts(
        moref=moref,
        name=str(props.get("name", moref)),
        instance_uuid=_str("config.instanceUuid"),
        bios_uuid=_str("config.uuid"),
        template=bool(props.get("config.template", False)),
        hardware_version=_str("config.version"),
        guest_id=_str("config.guestId"),
        guest_full_name=_str("config.guestFullName"),
        firmware=_str("config.firmware"),
        num_cpu=props.get("config.hardware.numCPU"),
        memory_mb=props.get("config.hardware.memoryMB"),
        power_state=_str("runtime.powerState"),
        connection_state=_str("runtime.connectionState"),
        host_moref=host_moref,
        host_name=host.name if host else None,
        datacenter=datacenter,
        vm_path_name=_str("config.files.vmPathName"),
        datastores=vm_datastores,
        nics=nics,
        disks=disks,
        snapshot_names=snapshot_names(props.get("snapshot")),
        consolidation_needed=bool(props.get("runtime.consolidationNeeded", False)),
        change_tracking_enabled=props.get("config.changeTrackingEnabled"),
        guest_disks=guest_disks,
        tools_status=_str("guest.toolsStatus"),
        tools_running_status=_str("guest.toolsRunningStatus"),
    )


def _datacenter_of(
    moref: str | None, parents: Mapping[str, str | None], dc_names: Mapping[str, str]
) -> str | None:
    seen: set[str] = set()
    while moref is not None and moref not in seen:
        if moref in dc_names:
            return dc_names[moref]
        seen.add(moref)
        moref = parents.get(moref)
    return None


def inventory_filter_spec(view: Any, vm_paths: Iterable[str] = VM_PATHS) -> Any:
    traverse = PropertyCollector.TraversalSpec(
        name="view", type=vim.view.ContainerView, path="view", skip=False
    )
    prop_specs = [PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=list(vm_paths))]
    prop_specs += [
        PropertyCollector.PropertySpec(type=kind, pathSet=list(paths))
        for kind, paths in _OTHER_PATHS
    ]
    return PropertyCollector.FilterSpec(
        objectSet=[PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=prop_specs,
    )


Record = tuple[str, str, dict[str, Any]]  # (WSDL type, moref, properties)


def _read_once(session: VcenterSession, max_objects: int, fast: bool) -> list[Record]:
    content = session.content
    types = [vim.VirtualMachine] + [kind for kind, _ in _OTHER_PATHS]
    view = content.viewManager.CreateContainerView(content.rootFolder, types, True)
    try:
        spec = inventory_filter_spec(view)
        if fast:
            return [
                (ref._wsdl, ref._moId, props)
                for ref, props in retrieve_paged_fast(session, spec, max_objects)
            ]
        return [
            (wsdl_name(c.obj), str(c.obj._moId), object_props(c))
            for c in retrieve_paged(session, spec, max_objects)
        ]
    finally:
        try:
            view.DestroyView()
        except Exception as exc:  # a dead session already took the view with it
            log.debug("DestroyView failed: %s", type(exc).__name__)


def read_inventory(
    session: VcenterSession, max_objects: int = 1000, *, fast: bool = True
) -> Inventory:
    """Read every VM (templates included; callers filter) with hosts, datastores and names.

    ``fast`` parses the answers with ElementTree (fastxml.py) instead of pyvmomi objects: same
    facts, a fraction of the client CPU. If the session expires mid-read, the view and the paging
    token die with it; the stub logs in again and the whole read restarts once (a partial
    inventory is never returned).
    """
    started = time.monotonic()
    trips_before = session.round_trips
    relogins_before = session.relogins
    try:
        contents = _read_once(session, max_objects, fast)
    except vmodl.MethodFault:
        if session.relogins == relogins_before:
            raise
        log.info("vCenter session was renewed during the inventory read; reading again")
        contents = _read_once(session, max_objects, fast)

    vm_props: list[tuple[str, dict[str, Any]]] = []
    parents: dict[str, str | None] = {}
    dc_names: dict[str, str] = {}
    host_props: dict[str, dict[str, Any]] = {}
    ds_props: dict[str, dict[str, Any]] = {}
    networks: dict[str, str] = {}
    for wsdl, moref, props in contents:
        kind = vim_type(wsdl)
        parents[moref] = _moid(props.get("parent"))
        if kind is None:
            continue
        if issubclass(kind, vim.VirtualMachine):
            vm_props.append((moref, props))
        elif issubclass(kind, vim.HostSystem):
            host_props[moref] = props
        elif issubclass(kind, vim.Datastore):
            ds_props[moref] = props
        elif issubclass(kind, vim.Network):
            networks[moref] = str(props.get("name", moref))
        elif issubclass(kind, vim.Datacenter):
            dc_names[moref] = str(props.get("name", moref))

    hosts = {
        m: HostFacts(m, str(p.get("name", m)), _datacenter_of(m, parents, dc_names))
        for m, p in host_props.items()
    }
    datastores = {
        m: DatastoreFacts(
            m,
            str(p.get("name", m)),
            str(p.get("summary.type", "")),
            _datacenter_of(m, parents, dc_names),
        )
        for m, p in ds_props.items()
    }
    vms = []
    for moref, props in vm_props:
        host_moref = _moid(props.get("runtime.host"))
        dc = _datacenter_of(moref, parents, dc_names)
        if dc is None and host_moref:
            dc = _datacenter_of(host_moref, parents, dc_names)
        vms.append(
            vm_facts_from_properties(
                moref, props, hosts=hosts, datastores=datastores, networks=networks, datacenter=dc
            )
        )
    return Inventory(
        vms=vms,
        hosts=hosts,
        datastores=datastores,
        datacenters=dc_names,
        round_trips=session.round_trips - trips_before,
        duration_s=time.monotonic() - started,
        objects_read=len(contents),
    )
