"""The snapshot-shipping run's activities: thin adapters from Temporal to snapship's library.

Every activity is idempotent under retry: preflight removes only our own leftovers, snapshot
creation is named per run attempt, shipping resumes from its heartbeat, tagging and deletion
tolerate repeats, and removing an already-removed snapshot is a no-op.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import WorkerDeps
from activities.heartbeat import heartbeats_while_running
from activities.permits import refresh_share
from snapship.config import MAX_SHIPPING_SLOTS
from snapship.ebs.groups import delete_snapshots, describe_group
from snapship.ebs.retention import apply_retention as plan_and_apply_retention
from snapship.ebs.throttle import Throttle, ThrottledEbs
from snapship.ebs.writer import EbsSnapshotWriter, WriterSettings
from snapship.faults import classify
from snapship.messages import (
    CreateSnapshotInput,
    DiscardInput,
    DiskAtSnapshot,
    Eligibility,
    EnsureCbtInput,
    EnsureCbtResult,
    GroupInput,
    GroupResult,
    LocationCheckInput,
    LocationCheckResult,
    PreflightInput,
    PreflightResult,
    RemoveOwnSnapshotsInput,
    RemoveOwnSnapshotsResult,
    RemoveSnapshotInput,
    RetentionInput,
    RetentionResult,
    ShipInput,
    ShippingProgress,
    ShippingStarted,
    ShipResult,
    SnapshotInfo,
    VmLocation,
)
from snapship.shipping import ShipCheckpoint, Shipper, VddkEndpoint
from snapship.telemetry.logs import log_context
from snapship.telemetry.metrics import shipping_slot
from snapship.vsphere import location as vlocation
from snapship.vsphere import snapshots as vsnap
from snapship.vsphere.cbt import ensure_cbt_active
from snapship.vsphere.eligibility import check_eligibility
from snapship.vsphere.errors import ObjectNotFound, SnapshotRemovalInProgress
from snapship.vsphere.facts import DatastoreFacts
from snapship.vsphere.inventory import VM_PATHS, read_inventory, vm_facts_from_properties
from snapship.vsphere.privileges import check_vm_privileges
from snapship.vsphere.props import retrieve_object, retrieve_objects

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 3.0
PROGRESS_SIGNAL_EVERY_S = 30.0
"""Progress reaches the workflow (status query, console, Web UI) at the first tick, then this
often. Each signal is four history events and a workflow task: every 3 s, a 13-hour initial sync
alone wrote more than Temporal's 51,200-event history limit, and 50 VMs shipping cost the worker
17 workflow activations a second. Heartbeats (the resume checkpoint) stay every tick: they write
no history."""
# A ship holds one thread of its pool at a time (two while it cleans up): room for several
# vCenters at the largest cap.
SHIP_THREADS_BOUND = 8 * MAX_SHIPPING_SLOTS
CREATE_WAIT_S = 600.0
"""How long create_snapshot waits for a snapshot task already running on the VM."""


def _to_message_location(loc: vlocation.VmLocation) -> VmLocation:
    return VmLocation(
        host=loc.host_moref or "",
        datastores=list(loc.datastore_morefs),
        disk_files={str(d.device_key): d.base_file_name or "" for d in loc.disks},
        disk_datastores={str(d.device_key): d.datastore_moref or "" for d in loc.disks},
    )


def _from_message_location(vm_moref: str, loc: VmLocation) -> vlocation.VmLocation:
    return vlocation.VmLocation(
        vm_moref=vm_moref,
        host_moref=loc.host or None,
        datastore_morefs=tuple(loc.datastores),
        disks=tuple(
            vlocation.DiskLocation(int(k), v or None, loc.disk_datastores.get(k) or None)
            for k, v in sorted(loc.disk_files.items(), key=lambda kv: int(kv[0]))
        ),
    )


class ReplicationActivities:
    def __init__(self, deps: WorkerDeps) -> None:
        self.deps = deps
        # Threads are made on demand, so this bound costs nothing; it must never be what
        # limits shipping: the worker's slots (one set per vCenter queue, and a vCenter added
        # later gets its own) and the permits are. A ship waiting here for a thread would hold
        # a permit and a VMware snapshot while doing nothing.
        self._ship_pool = ThreadPoolExecutor(
            max_workers=SHIP_THREADS_BOUND,
            thread_name_prefix="ship",
        )

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.preflight,
            self.ensure_cbt,
            self.create_snapshot,
            self.ship,
            self.location_check,
            self.complete_group,
            self.discard_snapshots,
            self.remove_snapshot,
            self.remove_own_snapshots,
            self.apply_retention,
        ]

    # ------------------------------------------------------------------ vCenter steps

    def _find_vm(self, inp: PreflightInput) -> tuple[str, dict[str, Any]]:
        """The VM by its discovered moref, checked against its instance UUID; else a search."""
        with self.deps.vcenter(inp.vcenter_id) as session:
            if inp.vm_moref:
                try:
                    props = retrieve_object(session, vim.VirtualMachine, inp.vm_moref, VM_PATHS)
                    if str(props.get("config.instanceUuid", "")).lower() == inp.vm_instance_uuid:
                        return inp.vm_moref, props
                except ObjectNotFound:
                    pass
            inventory = read_inventory(session)
            for vm in inventory.vms:
                if (vm.instance_uuid or "").lower() == inp.vm_instance_uuid.lower():
                    props = retrieve_object(session, vim.VirtualMachine, vm.moref, VM_PATHS)
                    return vm.moref, props
        raise ApplicationError(
            f"VM with instance UUID {inp.vm_instance_uuid} is no longer in vCenter",
            type="VmNotFound",
            non_retryable=True,
        )

    @activity.defn(name="snapship.preflight")
    @heartbeats_while_running
    def preflight(self, inp: PreflightInput) -> PreflightResult:
        with log_context(source_server=inp.source_server_id, run_id=inp.run_id):
            moref, props = self._find_vm(inp)
            with self.deps.vcenter(inp.vcenter_id) as session:
                # Our own leftovers (a crashed run) go first: they are not "foreign snapshots".
                removed = vsnap.remove_own_leftovers(session, moref, inp.source_server_id)
                if removed:
                    log.info("removed leftover snapshots of ours: %s", removed)
                    props = retrieve_object(session, vim.VirtualMachine, moref, VM_PATHS)
                ds_refs = [str(d._moId) for d in props.get("datastore") or ()]
                ds_props = retrieve_objects(
                    session, vim.Datastore, ds_refs, ["name", "summary.type"]
                )
                datastores = {
                    m: DatastoreFacts(
                        m, str(p.get("name", m)), str(p.get("summary.type", "")), None
                    )
                    for m, p in ds_props.items()
                }
                facts = vm_facts_from_properties(moref, props, datastores=datastores)
                result = check_eligibility(facts, self.deps.config.client_vm_uuid or None)
                reasons = list(result.reasons)
                if facts.consolidation_needed:
                    raise ApplicationError(
                        "vCenter reports that the VM's disks need consolidation; waiting for it "
                        "before taking a new snapshot"
                    )
                report = check_vm_privileges(session, [moref])
                if not report.ok:
                    reasons.append(
                        "missing vCenter privileges: "
                        + ", ".join(p.name for ps in report.missing.values() for p in ps)
                    )
                loc = vlocation.location_from_properties(moref, props)
            return PreflightResult(
                vm_moref=moref,
                vm_name=facts.name,
                eligibility=Eligibility(not reasons, reasons, list(result.warnings)),
                location=_to_message_location(loc),
                removed_leftovers=removed,
            )

    @activity.defn(name="snapship.ensure_cbt")
    @heartbeats_while_running
    def ensure_cbt(self, inp: EnsureCbtInput) -> EnsureCbtResult:
        """CBT on and tracking: a running VM only starts tracking after a stun, which a short
        activation snapshot provides (removed at once)."""
        with self.deps.vcenter(inp.vcenter_id) as session:
            status = ensure_cbt_active(session, inp.vm_moref, inp.source_server_id)
        return EnsureCbtResult(changed=status.enabled_now)

    @activity.defn(name="snapship.create_snapshot")
    @heartbeats_while_running
    def create_snapshot(self, inp: CreateSnapshotInput) -> SnapshotInfo:
        with log_context(source_server=inp.source_server_id, run_id=inp.run_id):
            with self.deps.vcenter(inp.vcenter_id) as session:
                # Nothing of ours may exist when the run's snapshot is made: a retry of this
                # activity may find the one an earlier attempt created (or its create task still
                # running: wait for it), and a killed ensure_cbt may have left its CBT stun, which
                # its retry, finding CBT tracking, has no reason to look for.
                vsnap.wait_for_snapshot_tasks(session, inp.vm_moref, CREATE_WAIT_S)
                for ref in vsnap.find_own_snapshots(session, inp.vm_moref, inp.source_server_id):
                    vsnap.remove_snapshot(session, ref.moref)
                busy = vsnap.snapshot_activity(session, inp.vm_moref)
                if busy:
                    raise SnapshotRemovalInProgress(inp.vm_moref, busy)
                created = vsnap.create_snapshot(
                    session,
                    inp.vm_moref,
                    inp.source_server_id,
                    inp.run_id,
                    description="snapship replication point",
                )
            disks = [
                DiskAtSnapshot(
                    device_key=d.device_key,
                    disk_uuid=d.backing_uuid or "",
                    capacity_bytes=d.capacity_bytes,
                    change_id=d.change_id or "",
                    file_name=d.file_name or "",
                    label=d.label,
                )
                for d in created.disks
                if d.backing_type == "VirtualDiskFlatVer2BackingInfo"
            ]
            return SnapshotInfo(
                snapshot_moref=created.snapshot_moref,
                name=created.name,
                created_at=datetime.now(UTC).isoformat(),
                disks=disks,
            )

    @activity.defn(name="snapship.location_check")
    @heartbeats_while_running
    def location_check(self, inp: LocationCheckInput) -> LocationCheckResult:
        with self.deps.vcenter(inp.vcenter_id) as session:
            after = vlocation.record_location(session, inp.vm_moref)
        before = _from_message_location(inp.vm_moref, inp.before)
        change = vlocation.compare_locations(before, after)
        return LocationCheckResult(change.moved, change.summary, _to_message_location(after))

    @staticmethod
    def _moved_since(session: Any, inp: ShipInput) -> str | None:
        if inp.location is None:
            return None
        try:
            after = vlocation.record_location(session, inp.vm_moref)
        except Exception:
            return None
        change = vlocation.compare_locations(
            _from_message_location(inp.vm_moref, inp.location), after
        )
        return change.summary if change.moved else None

    @activity.defn(name="snapship.remove_snapshot")
    @heartbeats_while_running
    def remove_snapshot(self, inp: RemoveSnapshotInput) -> None:
        """Idempotent: already gone is done; a removal still running (an attempt whose worker
        died started it) is waited for rather than raced."""
        with self.deps.vcenter(inp.vcenter_id) as session:
            vsnap.wait_for_snapshot_tasks(session, inp.vm_moref, vsnap.DEFAULT_REMOVE_TIMEOUT_S)
            vsnap.remove_snapshot(session, inp.snapshot_moref)

    @activity.defn(name="snapship.remove_own_snapshots")
    @heartbeats_while_running
    def remove_own_snapshots(self, inp: RemoveOwnSnapshotsInput) -> RemoveOwnSnapshotsResult:
        """Find by name what an interrupted create may have left (or still be making), remove
        it, and check that nothing of ours remains: what `stop` reports rests on this check."""
        moref, _props = self._find_vm(
            PreflightInput(
                inp.source_server_id,
                inp.vm_instance_uuid,
                "",
                inp.vm_moref,
                vcenter_id=inp.vcenter_id,
            )
        )
        with self.deps.vcenter(inp.vcenter_id) as session:
            removed, remaining = vsnap.remove_named(
                session, moref, inp.source_server_id, inp.run_id or None
            )
        if removed:
            log.info("removed snapship snapshots found by name: %s", removed)
        return RemoveOwnSnapshotsResult(removed, remaining)

    # ------------------------------------------------------------------ EBS steps

    @activity.defn(name="snapship.complete_group")
    @heartbeats_while_running
    def complete_group(self, inp: GroupInput) -> GroupResult:
        aws = self.deps.aws()
        writer = EbsSnapshotWriter(aws.ebs, aws.ec2)
        for sid in inp.snapshot_ids:
            writer.wait_completed(sid)
            activity.heartbeat(sid)
        group = describe_group(aws.ec2, inp.group_id)
        complete = group is not None and group.complete and set(group.snapshot_ids) == set(
            inp.snapshot_ids
        )
        if complete and group is not None:
            point = datetime.fromisoformat(group.point_in_time.replace("Z", "+00:00"))
            lag = (datetime.now(UTC) - point).total_seconds()
            self.deps.metrics.replication_lag.labels(source_server=inp.source_server_id).set(lag)
        return GroupResult(inp.group_id, complete, list(inp.snapshot_ids))

    @activity.defn(name="snapship.discard_snapshots")
    @heartbeats_while_running
    def discard_snapshots(self, inp: DiscardInput) -> None:
        log.info("discarding EBS snapshots %s: %s", inp.snapshot_ids, inp.reason)
        delete_snapshots(self.deps.aws().ec2, inp.snapshot_ids)

    @activity.defn(name="snapship.apply_retention")
    @heartbeats_while_running
    def apply_retention(self, inp: RetentionInput) -> RetentionResult:
        plan = plan_and_apply_retention(
            self.deps.aws().ec2, inp.source_server_id, inp.keep_groups,
            inp.protected_snapshot_ids,
        )
        return RetentionResult([g.group_id for g in plan.delete])

    # ------------------------------------------------------------------ shipping

    @activity.defn(name="snapship.ship")
    async def ship(self, inp: ShipInput) -> ShipResult:
        """Runs on the capped shipping queue; the blocking copy runs in a thread while this
        coroutine heartbeats checkpoints, reports progress and relays cancellation."""
        info = activity.info()
        resume = ShipCheckpoint.from_dict(
            info.heartbeat_details[0] if info.heartbeat_details else None
        )
        handle = activity.client().get_workflow_handle(inp.source_server_id)
        await handle.signal("shipping_started", ShippingStarted(inp.run_id))
        cancel = threading.Event()
        throttle = Throttle(cancel=cancel)
        await refresh_share(activity.client(), inp, throttle)
        latest: list[ShipCheckpoint] = [resume]
        deps = self.deps
        cfg = deps.config
        loop = asyncio.get_running_loop()
        vc = deps.vcenter_settings(inp.vcenter_id)
        endpoint = await loop.run_in_executor(
            self._ship_pool,
            lambda: VddkEndpoint(
                server=vc.host,
                port=vc.port,
                thumbprint=deps.vcenter_thumbprint(inp.vcenter_id),
                username=vc.user,
                password=deps.vcenter_password(inp.vcenter_id),
                transport_modes=cfg.replication.vddk_transport_modes,
            ),
        )
        aws = deps.aws()
        shipper_box: list[Shipper] = []
        ctx = contextvars.copy_context()

        def on_checkpoint(cp: ShipCheckpoint) -> None:
            # Hand each checkpoint to Temporal as soon as the writer makes it (the SDK throttles
            # and always sends the latest): what a retry re-sends is bounded by one window.
            latest[0] = cp
            loop.call_soon_threadsafe(ctx.run, activity.heartbeat, cp.to_dict())

        def run() -> ShipResult:
            with deps.vcenter(inp.vcenter_id) as session, log_context(
                source_server=inp.source_server_id, run_id=inp.run_id
            ):
                shipper = Shipper(
                    session,
                    deps.vddk(),
                    endpoint,
                    ThrottledEbs(aws.ebs, throttle),
                    aws.ec2,
                    WriterSettings(
                        max_in_flight=cfg.replication.ebs_concurrency,
                        checkpoint_every_blocks=cfg.replication.checkpoint_every_blocks,
                    ),
                    metrics=deps.metrics,
                    on_checkpoint=on_checkpoint,
                    cancel=cancel,
                    disks_in_parallel=cfg.replication.disks_in_parallel,
                )
                shipper_box.append(shipper)
                try:
                    return ShipResult(shipper.ship(inp, resume))
                except Exception as err:
                    moved = self._moved_since(session, inp)
                    if moved is None:
                        raise
                    # The snapshot's files moved under us (Storage vMotion) or the VM changed
                    # host: retrying this attempt cannot help; the workflow discards the run.
                    delete_snapshots(aws.ec2, shipper.started_snapshot_ids)
                    raise ApplicationError(
                        f"VM moved during shipping ({moved}): {classify(err).message}",
                        type="VmMovedDuringRun",
                        non_retryable=True,
                    ) from err

        with shipping_slot(deps.metrics):
            # The copy runs in this activity's context: its spans nest under the activity's.
            future = loop.run_in_executor(self._ship_pool, contextvars.copy_context().run, run)
            signalled_at: float | None = None
            try:
                while True:
                    done, _ = await asyncio.wait({future}, timeout=PROGRESS_EVERY_S)
                    # Beat first: the share query and the progress signal may each wait a few
                    # seconds on a busy server, and the heartbeat timeout must not count them.
                    activity.heartbeat(latest[0].to_dict())
                    await refresh_share(activity.client(), inp, throttle)
                    now = loop.time()
                    due = signalled_at is None or now - signalled_at >= PROGRESS_SIGNAL_EVERY_S
                    if shipper_box and due and not done:
                        signalled_at = now
                        await handle.signal(
                            "shipping_progress",
                            ShippingProgress(inp.run_id, shipper_box[0].progress.snapshot()),
                        )
                    if done:
                        return future.result()
            except asyncio.CancelledError:
                cancel.set()
                try:
                    await asyncio.shield(asyncio.wait_for(asyncio.wrap_future(future), 120))
                except BaseException:
                    pass
                started = shipper_box[0].started_snapshot_ids if shipper_box else []
                # Only a cancel the workflow asked for ends the run's snapshots. A heartbeat
                # timeout (a worker too busy to beat) or a worker shutdown is followed by a
                # retry that resumes from the last heartbeat, which names them: deleted, the
                # retry found finished disks gone (a 50-VM run waited an hour on one).
                details = activity.cancellation_details()
                if started and details is not None and details.cancel_requested:
                    await loop.run_in_executor(
                        self._ship_pool, lambda: delete_snapshots(aws.ec2, started)
                    )
                raise
