"""Where a VM lives (host, datastores, disk files), to tell a move *during* a run from one between.

A vMotion or Storage vMotion while a run reads disks is not supported (MGN says the same); a move
between runs is fine. During a run our snapshot exists, so each disk's live file is a delta
(``vm-000001.vmdk``); the comparison therefore uses the base of each disk's parent chain plus the
datastore, which a snapshot does not change and a Storage vMotion does. Should an endpoint report a
delta without its ``parent`` chain, VMware's delta naming (``<base>-NNNNNN.vmdk``) is folded back
to the base name, so our own snapshot is never mistaken for a move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim

from snapship.vsphere.props import retrieve_object
from snapship.vsphere.session import VcenterSession


@dataclass(frozen=True)
class DiskLocation:
    device_key: int
    base_file_name: str | None  # root of the backing's parent chain
    datastore_moref: str | None  # of the base file


@dataclass(frozen=True)
class VmLocation:
    vm_moref: str
    host_moref: str | None
    datastore_morefs: tuple[str, ...]
    disks: tuple[DiskLocation, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class LocationChange:
    moved: bool
    host_changed: bool
    datastores_changed: bool
    moved_disks: tuple[int, ...]
    summary: str


_DELTA_SUFFIX = re.compile(r"-\d{6}(\.vmdk)$")


def base_disk_name(file_name: str | None) -> str | None:
    """``[ds1] vm/vm-000002.vmdk`` -> ``[ds1] vm/vm.vmdk`` (VMware's delta disk naming)."""
    return None if file_name is None else _DELTA_SUFFIX.sub(r"\1", file_name)


def _base_backing(backing: Any) -> Any:
    seen = 0
    while getattr(backing, "parent", None) is not None and seen < 256:
        backing = backing.parent
        seen += 1
    return backing


def location_from_properties(vm_moref: str, props: dict[str, Any]) -> VmLocation:
    host = props.get("runtime.host")
    datastores = tuple(sorted(str(d._moId) for d in props.get("datastore") or ()))
    disks = []
    for dev in props.get("config.hardware.device") or ():
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        base = _base_backing(dev.backing)
        ds = getattr(base, "datastore", None)
        disks.append(
            DiskLocation(
                device_key=int(dev.key),
                base_file_name=base_disk_name(getattr(base, "fileName", None)),
                datastore_moref=str(ds._moId) if ds is not None else None,
            )
        )
    return VmLocation(
        vm_moref=vm_moref,
        host_moref=str(host._moId) if host is not None else None,
        datastore_morefs=datastores,
        disks=tuple(sorted(disks, key=lambda d: d.device_key)),
    )


def record_location(session: VcenterSession, vm_moref: str) -> VmLocation:
    props = retrieve_object(
        session,
        vim.VirtualMachine,
        vm_moref,
        ["runtime.host", "datastore", "config.hardware.device"],
    )
    return location_from_properties(vm_moref, props)


def compare_locations(before: VmLocation, after: VmLocation) -> LocationChange:
    """Did the VM move between the two records? Disk additions/removals count as changes too."""
    host_changed = before.host_moref != after.host_moref
    before_disks = {d.device_key: d for d in before.disks}
    after_disks = {d.device_key: d for d in after.disks}
    moved = tuple(
        sorted(
            k
            for k in before_disks.keys() | after_disks.keys()
            if before_disks.get(k) != after_disks.get(k)
        )
    )
    # A snapshot adds no datastore; a Storage vMotion of the home or of any disk changes the set.
    datastores_changed = set(before.datastore_morefs) != set(after.datastore_morefs)
    parts = []
    if host_changed:
        parts.append(f"host {before.host_moref} -> {after.host_moref}")
    if datastores_changed:
        parts.append(
            f"datastores {','.join(before.datastore_morefs)} -> {','.join(after.datastore_morefs)}"
        )
    for k in moved:
        b, a = before_disks.get(k), after_disks.get(k)
        was = b.base_file_name if b else "(none)"
        now = a.base_file_name if a else "(none)"
        parts.append(f"disk {k} {was} -> {now}")
    return LocationChange(
        moved=bool(parts),
        host_changed=host_changed,
        datastores_changed=datastores_changed,
        moved_disks=moved,
        summary="; ".join(parts) if parts else "no change",
    )
