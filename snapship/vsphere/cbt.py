"""Changed Block Tracking: switch it on, and ask which areas of a disk changed.

``QueryChangedDiskAreas`` answers a bounded number of extents per call (about 2000 on ESXi). A
caller that reads only the first answer silently copies part of the changes and corrupts the
replica, so ``query_changed_areas`` loops ``startOffset = info.startOffset + info.length`` until
the disk's capacity, and never asks at ``startOffset == capacity`` (vCenter rejects that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyVmomi import vim

from snapship.vsphere.errors import CbtResetRequired, ChangedAreasInvalid
from snapship.vsphere.props import retrieve_object
from snapship.vsphere.session import VcenterSession
from snapship.vsphere.tasks import fault_text, wait_for_task

ALL_ALLOCATED = "*"  # changeId meaning "every allocated area" (first, full run)


def ensure_cbt_enabled(session: VcenterSession, vm_moref: str, timeout_s: float = 600.0) -> bool:
    """Turn CBT on for the VM; True when it was off (earlier changeIds are then invalid).

    CBT becomes active at the next stun (snapshot creation), which every run does next.
    """
    props = retrieve_object(session, vim.VirtualMachine, vm_moref, ["config.changeTrackingEnabled"])
    if props.get("config.changeTrackingEnabled") is True:
        return False
    task = session.vm(vm_moref).ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True))
    wait_for_task(session, task, f"Enable Changed Block Tracking on {vm_moref}", timeout_s)
    return True


@dataclass
class ChangedAreaScan:
    extents: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), sorted
    calls: int = 0
    changed_bytes: int = 0


def _merge(extents: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in sorted(extents):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            prev_start, prev_len = merged[-1]
            merged[-1] = (prev_start, max(prev_start + prev_len, start + length) - prev_start)
        else:
            merged.append((start, length))
    return merged


def scan_changed_areas(
    session: VcenterSession,
    vm_moref: str,
    snapshot_moref: str,
    device_key: int,
    capacity: int,
    change_id: str,
) -> ChangedAreaScan:
    """Every area of disk ``device_key`` changed since ``change_id`` (or allocated, for "*").

    Raises CbtResetRequired on FileFault (CBT reset/corrupt: full resync), ChangedAreasInvalid
    when vCenter's answer makes no progress or points outside the disk.
    """
    vm = session.vm(vm_moref)
    snapshot = vim.vm.Snapshot(snapshot_moref, session.stub)
    scan = ChangedAreaScan()
    raw: list[tuple[int, int]] = []
    offset = 0
    while offset < capacity:
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snapshot, deviceKey=device_key, startOffset=offset, changeId=change_id
            )
        except vim.fault.FileFault as exc:
            raise CbtResetRequired(vm_moref, device_key, fault_text(exc)) from None
        scan.calls += 1
        start, length = int(info.startOffset), int(info.length)
        end = start + length
        if start > offset or end <= offset:
            raise ChangedAreasInvalid(
                vm_moref,
                device_key,
                f"asked from offset {offset}, answer covers [{start}, {end})",
            )
        for area in info.changedArea or ():
            a_start, a_len = int(area.start), int(area.length)
            if a_len <= 0:
                continue
            if a_start < 0 or a_start + a_len > capacity:
                raise ChangedAreasInvalid(
                    vm_moref,
                    device_key,
                    f"area [{a_start}, {a_start + a_len}) lies outside the disk "
                    f"(capacity {capacity})",
                )
            raw.append((a_start, a_len))
        offset = end
    scan.extents = _merge(raw)
    scan.changed_bytes = sum(length for _, length in scan.extents)
    return scan


def query_changed_areas(
    session: VcenterSession,
    vm_moref: str,
    snapshot_moref: str,
    device_key: int,
    capacity: int,
    change_id: str,
) -> list[tuple[int, int]]:
    """(offset, length) of every changed area, all pages; see ``scan_changed_areas``."""
    return scan_changed_areas(
        session, vm_moref, snapshot_moref, device_key, capacity, change_id
    ).extents
