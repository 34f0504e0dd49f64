"""VMware snapshots for one replication run: create, read disk state, remove, clean up leftovers.

Names carry the workflow id and run id (``snapship-<workflow>@<run>``) so a snapshot left by a
crashed or timed-out run is recognisable as ours and removed by the next run, while snapshots
someone else took are never touched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from snapship.vsphere.eligibility import OWN_SNAPSHOT_PREFIX
from snapship.vsphere.errors import (
    SnapshotRemovalInProgress,
    SnapshotTimedOut,
    TaskFailed,
    TaskTimedOut,
)
from snapship.vsphere.facts import FLAT_VER2_BACKING
from snapship.vsphere.inventory import wsdl_name
from snapship.vsphere.props import retrieve_object, retrieve_objects
from snapship.vsphere.session import VcenterSession
from snapship.vsphere.tasks import task_state, wait_for_task

log = logging.getLogger(__name__)

RUN_SEPARATOR = "@"
DEFAULT_CREATE_TIMEOUT_S = 1800.0
DEFAULT_REMOVE_TIMEOUT_S = 3600.0
# After a create times out we cancel it and keep watching this long for a late success.
DEFAULT_LATE_GRACE_S = 60.0


def snapshot_name(workflow_id: str, run_id: str) -> str:
    if RUN_SEPARATOR in run_id:
        raise ValueError(f"run id must not contain {RUN_SEPARATOR!r}: {run_id!r}")
    return f"{OWN_SNAPSHOT_PREFIX}{workflow_id}{RUN_SEPARATOR}{run_id}"


def parse_snapshot_name(name: str) -> tuple[str, str] | None:
    """(workflow id, run id) for a name made by ``snapshot_name``; None for anyone else's."""
    if not name.startswith(OWN_SNAPSHOT_PREFIX):
        return None
    workflow_id, sep, run_id = name[len(OWN_SNAPSHOT_PREFIX) :].rpartition(RUN_SEPARATOR)
    if not sep or not workflow_id:
        return None
    return workflow_id, run_id


@dataclass(frozen=True)
class SnapshotRef:
    moref: str
    name: str
    description: str
    create_time: str | None


@dataclass(frozen=True)
class SnapshotDisk:
    """A disk as frozen in the snapshot: what shipping reads and what CBT is asked about."""

    device_key: int
    label: str
    capacity_bytes: int
    change_id: str | None
    backing_uuid: str | None
    file_name: str | None
    datastore_moref: str | None
    backing_type: str


@dataclass
class CreatedSnapshot:
    vm_moref: str
    snapshot_moref: str
    name: str
    disks: list[SnapshotDisk] = field(default_factory=list)


def _walk(tree: Any) -> list[Any]:
    out: list[Any] = []
    stack = list(reversed(tree or []))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.childSnapshotList or []))
    return out


def list_snapshots(session: VcenterSession, vm_moref: str) -> list[SnapshotRef]:
    props = retrieve_object(session, vim.VirtualMachine, vm_moref, ["snapshot"])
    info = props.get("snapshot")
    nodes = _walk(info.rootSnapshotList if info is not None else None)
    return [
        SnapshotRef(
            moref=str(n.snapshot._moId),
            name=str(n.name),
            description=str(n.description or ""),
            create_time=n.createTime.isoformat() if n.createTime else None,
        )
        for n in nodes
    ]


def list_foreign_snapshots(session: VcenterSession, vm_moref: str) -> list[SnapshotRef]:
    """Snapshots snapship did not create (any name without our prefix)."""
    return [s for s in list_snapshots(session, vm_moref) if parse_snapshot_name(s.name) is None]


def find_own_snapshots(
    session: VcenterSession, vm_moref: str, workflow_id: str
) -> list[SnapshotRef]:
    """This workflow's snapshots on the VM (any run): leftovers unless the current run made them."""
    out = []
    for s in list_snapshots(session, vm_moref):
        parsed = parse_snapshot_name(s.name)
        if parsed is not None and parsed[0] == workflow_id:
            out.append(s)
    return out


_REMOVAL_MARKERS = ("removesnapshot", "snapshot.remove", "removeallsnapshots", "consolidate")
_CREATE_MARKERS = ("createsnapshot",)


def snapshot_activity(session: VcenterSession, vm_moref: str) -> str | None:
    """Why a new snapshot must wait now (removal/consolidation/creation running), or None."""
    props = retrieve_object(
        session, vim.VirtualMachine, vm_moref, ["runtime.consolidationNeeded", "recentTask"]
    )
    if props.get("runtime.consolidationNeeded"):
        return "vCenter reports that the VM's disks need consolidation (consolidationNeeded)"
    return _running_snapshot_task(session, props)


def running_snapshot_task(session: VcenterSession, vm_moref: str) -> str | None:
    """A snapshot create/remove/consolidate task still queued or running on the VM, or None.

    vCenter runs a task to its end even when the client that started it died: a worker that
    resumes after a crash waits for it instead of racing it."""
    props = retrieve_object(session, vim.VirtualMachine, vm_moref, ["recentTask"])
    return _running_snapshot_task(session, props)


def _running_snapshot_task(session: VcenterSession, props: dict[str, Any]) -> str | None:
    task_ids = [str(t._moId) for t in props.get("recentTask") or ()]
    infos = retrieve_objects(session, vim.Task, task_ids, ["info"])
    for moref, p in infos.items():
        info = p.get("info")
        if info is None or str(info.state) not in ("queued", "running"):
            continue
        keys = f"{info.descriptionId or ''} {info.name or ''}".lower()
        if any(m in keys for m in _REMOVAL_MARKERS):
            return f"a snapshot removal/consolidation task ({moref}) is still running"
        if any(m in keys for m in _CREATE_MARKERS):
            return f"another snapshot creation task ({moref}) is still running"
    return None


def wait_for_snapshot_tasks(
    session: VcenterSession, vm_moref: str, timeout_s: float, poll_s: float = 0.5
) -> None:
    """Until no snapshot task runs on the VM; `SnapshotRemovalInProgress` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = running_snapshot_task(session, vm_moref)
        if busy is None:
            return
        if time.monotonic() >= deadline:
            raise SnapshotRemovalInProgress(vm_moref, busy)
        time.sleep(poll_s)


def remove_named(
    session: VcenterSession,
    vm_moref: str,
    workflow_id: str,
    run_id: str | None = None,
    *,
    wait_s: float = DEFAULT_CREATE_TIMEOUT_S,
    timeout_s: float = DEFAULT_REMOVE_TIMEOUT_S,
) -> tuple[list[str], list[str]]:
    """Remove this workflow's snapshots (only run `run_id`'s when given), after any snapshot task
    on the VM ended: a create an interrupted attempt started may still produce one. Returns
    (names removed, names of ours still on the VM afterwards, which is empty unless something
    raced us)."""
    wait_for_snapshot_tasks(session, vm_moref, wait_s)
    wanted = snapshot_name(workflow_id, run_id) if run_id is not None else None
    removed = []
    for ref in find_own_snapshots(session, vm_moref, workflow_id):
        if wanted is None or ref.name == wanted:
            remove_snapshot(session, ref.moref, timeout_s=timeout_s)
            removed.append(ref.name)
    left = [
        r.name
        for r in find_own_snapshots(session, vm_moref, workflow_id)
        if wanted is None or r.name == wanted
    ]
    return removed, left


def read_snapshot_disks(session: VcenterSession, snapshot_moref: str) -> list[SnapshotDisk]:
    """Each disk's changeId, capacity, backing UUID, deviceKey and file from the snapshot config."""
    props = retrieve_object(session, vim.vm.Snapshot, snapshot_moref, ["config.hardware.device"])
    disks = []
    for dev in props.get("config.hardware.device") or ():
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        ds = getattr(backing, "datastore", None)
        disks.append(
            SnapshotDisk(
                device_key=int(dev.key),
                label=str(dev.deviceInfo.label) if dev.deviceInfo else f"disk {dev.key}",
                capacity_bytes=int(dev.capacityInBytes or (dev.capacityInKB or 0) * 1024),
                change_id=getattr(backing, "changeId", None),
                backing_uuid=getattr(backing, "uuid", None),
                file_name=getattr(backing, "fileName", None),
                datastore_moref=str(ds._moId) if ds is not None else None,
                backing_type=wsdl_name(backing) if backing is not None else FLAT_VER2_BACKING,
            )
        )
    return disks


def _find_by_name(session: VcenterSession, vm_moref: str, name: str) -> list[SnapshotRef]:
    return [s for s in list_snapshots(session, vm_moref) if s.name == name]


def create_snapshot(
    session: VcenterSession,
    vm_moref: str,
    workflow_id: str,
    run_id: str,
    *,
    quiesce: bool = False,
    description: str = "",
    timeout_s: float = DEFAULT_CREATE_TIMEOUT_S,
    late_grace_s: float = DEFAULT_LATE_GRACE_S,
    remove_timeout_s: float = DEFAULT_REMOVE_TIMEOUT_S,
) -> CreatedSnapshot:
    """Create this run's snapshot (memory off) and read its disks.

    Refuses while a removal or consolidation runs on the VM. If the create task outlives
    ``timeout_s`` it is cancelled and watched for ``late_grace_s`` more; a snapshot that appears
    anyway (found by task result or by name) is removed, so a timeout never leaks one.
    """
    busy = snapshot_activity(session, vm_moref)
    if busy:
        raise SnapshotRemovalInProgress(vm_moref, busy)
    name = snapshot_name(workflow_id, run_id)
    text = description or f"snapship replication: workflow {workflow_id}, run {run_id}"
    vm = session.vm(vm_moref)
    task = vm.CreateSnapshot_Task(name=name, description=text, memory=False, quiesce=quiesce)
    try:
        snap = wait_for_task(session, task, f"Create snapshot {name}", timeout_s)
    except TaskTimedOut:
        cleaned = _clean_up_late_snapshot(
            session, vm_moref, task, name, late_grace_s, remove_timeout_s
        )
        raise SnapshotTimedOut(vm_moref, name, timeout_s, cleaned) from None
    except TaskFailed:
        # A failed create normally leaves nothing, but never leave a half-made one behind.
        for ref in _find_by_name(session, vm_moref, name):
            remove_snapshot(session, ref.moref, timeout_s=remove_timeout_s)
        raise
    snapshot_moref = str(snap._moId)
    try:
        disks = read_snapshot_disks(session, snapshot_moref)
    except Exception:
        remove_snapshot(session, snapshot_moref, timeout_s=remove_timeout_s)
        raise
    return CreatedSnapshot(vm_moref, snapshot_moref, name, disks)


def _clean_up_late_snapshot(
    session: VcenterSession,
    vm_moref: str,
    task: Any,
    name: str,
    grace_s: float,
    remove_timeout_s: float,
) -> bool:
    """After a create timed out: cancel, watch for a late result, remove whatever appeared.

    Returns True when the outcome is settled (task ended and nothing of ours is left).
    """
    try:
        task.CancelTask()
    except Exception as exc:  # not cancellable at this stage: keep watching
        log.info("Cancelling timed-out snapshot task failed: %s", type(exc).__name__)
    deadline = time.monotonic() + grace_s
    state = "running"
    while time.monotonic() < deadline:
        state = task_state(session, str(task._moId)).state
        if state in ("success", "error"):
            break
        time.sleep(0.2)
    removed_any = False
    for ref in _find_by_name(session, vm_moref, name):
        log.warning("Removing snapshot %s that appeared after its create timed out", name)
        remove_snapshot(session, ref.moref, timeout_s=remove_timeout_s)
        removed_any = True
    settled = state in ("success", "error")
    return settled and (removed_any or not _find_by_name(session, vm_moref, name))


def remove_snapshot(
    session: VcenterSession, snapshot_moref: str, *, timeout_s: float = DEFAULT_REMOVE_TIMEOUT_S
) -> None:
    """Remove one snapshot (children kept, disks consolidated) and wait until vCenter is done."""
    snap = vim.vm.Snapshot(snapshot_moref, session.stub)
    try:
        task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    except (vim.fault.NotFound, vmodl.fault.ManagedObjectNotFound):
        return  # already gone: removing is idempotent
    wait_for_task(session, task, f"Remove snapshot {snapshot_moref}", timeout_s)


def remove_own_leftovers(
    session: VcenterSession,
    vm_moref: str,
    workflow_id: str,
    *,
    keep_run_id: str | None = None,
    timeout_s: float = DEFAULT_REMOVE_TIMEOUT_S,
) -> list[str]:
    """Remove this workflow's snapshots left by earlier runs; returns the names removed."""
    removed = []
    for ref in find_own_snapshots(session, vm_moref, workflow_id):
        parsed = parse_snapshot_name(ref.name)
        if keep_run_id is not None and parsed is not None and parsed[1] == keep_run_id:
            continue
        log.info("Removing leftover snapshot %s (%s) on %s", ref.name, ref.moref, vm_moref)
        remove_snapshot(session, ref.moref, timeout_s=timeout_s)
        removed.append(ref.name)
    return removed
