"""Changed Block Tracking: switch it on, and ask which areas of a disk changed.

``QueryChangedDiskAreas`` answers a bounded number of extents per call (about 2000 on ESXi). A
caller that reads only the first answer silently copies part of the changes and corrupts the
replica, so ``query_changed_areas`` loops ``startOffset = info.startOffset + info.length`` until
the disk's capacity, and never asks at ``startOffset == capacity`` (vCenter rejects that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyVmomi import vim

from snapship.vsphere.errors import CbtNotTracking, CbtResetRequired, ChangedAreasInvalid
from snapship.vsphere.props import retrieve_object
from snapship.vsphere.session import VcenterSession
from snapship.vsphere.tasks import fault_text, wait_for_task

ALL_ALLOCATED = "*"  # changeId meaning "every allocated area" (first, full run)


def ensure_cbt_enabled(session: VcenterSession, vm_moref: str, timeout_s: float = 600.0) -> bool:
    """Turn CBT on for the VM; True when it was off (earlier changeIds are then invalid).

    On a running VM the setting only takes effect at the next stun; ``ensure_cbt_active`` also
    makes sure of that.
    """
    props = retrieve_object(session, vim.VirtualMachine, vm_moref, ["config.changeTrackingEnabled"])
    if props.get("config.changeTrackingEnabled") is True:
        return False
    task = session.vm(vm_moref).ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True))
    wait_for_task(session, task, f"Enable Changed Block Tracking on {vm_moref}", timeout_s)
    return True


@dataclass(frozen=True)
class CbtStatus:
    enabled_now: bool  # CBT was off and has been switched on: stored changeIds are void
    activated_now: bool  # a stun (temporary snapshot) was needed to make tracking start
    live_change_ids: dict[int, str | None]  # deviceKey -> changeId of the live disk


def _live_change_ids(session: VcenterSession, vm_moref: str) -> dict[int, str | None]:
    props = retrieve_object(session, vim.VirtualMachine, vm_moref, ["config.hardware.device"])
    return {
        int(d.key): getattr(d.backing, "changeId", None)
        for d in props.get("config.hardware.device") or ()
        if isinstance(d, vim.vm.device.VirtualDisk)
        and isinstance(d.backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo)
        and not str(d.backing.diskMode or "").startswith("independent")
    }


def ensure_cbt_active(
    session: VcenterSession,
    vm_moref: str,
    workflow_id: str,
    timeout_s: float = 600.0,
) -> CbtStatus:
    """CBT on *and tracking*: every replicable disk reports a changeId.

    A configured-but-inactive CBT (enabled on a running VM, not yet stunned) would give the run's
    snapshot no changeId, so the next run could not be incremental. A temporary snapshot
    (``snapship-<workflow>@cbt-activation``) is created and removed to stun the VM once.
    """
    from snapship.vsphere.snapshots import create_snapshot, remove_snapshot

    enabled_now = ensure_cbt_enabled(session, vm_moref, timeout_s)
    ids = _live_change_ids(session, vm_moref)
    activated_now = False
    if any(cid is None for cid in ids.values()):
        stun = create_snapshot(
            session,
            vm_moref,
            workflow_id,
            "cbt-activation",
            description="snapship: activates Changed Block Tracking (removed at once)",
            timeout_s=timeout_s,
            remove_timeout_s=timeout_s,
        )
        remove_snapshot(session, stun.snapshot_moref, timeout_s=timeout_s)
        activated_now = True
        ids = _live_change_ids(session, vm_moref)
        silent = sorted(key for key, cid in ids.items() if cid is None)
        if silent:
            # A run now would ship a snapshot without changeIds: every later run a full copy.
            raise CbtNotTracking(vm_moref, silent)
    return CbtStatus(enabled_now, activated_now, ids)


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
