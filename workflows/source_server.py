"""SourceServerWorkflow: one durable workflow per VM, owning its whole replication lifecycle.

The workflow is the source of truth for a VM's replication point (the committed changeIds and
EBS snapshot chain). It only advances that point after a run's snapshot group is complete and the
VMware snapshot is gone, so a crash, a cancellation or a vMotion at any step leaves the last good
point untouched and the next run starts from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

from workflows.activity_options import timeouts
from workflows.failure_text import failure_text

with workflow.unsafe.imports_passed_through():
    from snapship import search_attributes as sa
    from snapship.command_deadline import refuse_if_expired
    from snapship.error_text import retry_line
    from snapship.messages import (
        ActivityRetry,
        CommandResult,
        CreateSnapshotInput,
        DiscardInput,
        DiscoveredServer,
        DiskChain,
        DiskProgress,
        DiskShipPlan,
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
        ReplicationCommand,
        ReplicationSettings,
        RetentionInput,
        RetentionResult,
        RunRecord,
        ShipInput,
        ShippingProgress,
        ShippingStarted,
        ShipResult,
        SnapshotInfo,
        SourceServerInput,
        SourceServerState,
        SourceServerStatus,
        StartReplicationRequest,
    )
    from snapship.permit_messages import (
        PermitGrant,
        PermitRelease,
        PermitRequest,
        PermitWaiting,
        RequestPermitInput,
        RunPriority,
        coordinator_id,
    )
    from snapship.states import DataReplicationState as DRS
    from snapship.states import LifeCycleState as LCS
    from snapship.states import ReplicationType
    from snapship.summary import server_details
    from workflows.lifecycle_updates import LifecycleUpdates

CONTROL_QUEUE = "snapship-control"
SHIPPING_QUEUE = "snapship-shipping"
MAX_MOVE_RETRIES = 3
MIN_INTERVAL_SECONDS = 5
MAX_RUN_RECORDS = 20
HISTORY_EVENTS_LIMIT = 8000
# A VM that waits for a permit repeats its request this often (see _acquire_permit).
PERMIT_REQUEST_REFRESH = timedelta(minutes=5)

# Short vCenter calls: a handful of tries; Temporal keeps the budget, not nested retry loops.
VCENTER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
    non_retryable_error_types=["IneligibleVm", "VmNotFound", "MissingPrivileges"],
)
# Removing our snapshot must eventually happen: retry without a cap.
CLEANUP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
# The check behind stop's answer: a few quick tries, then stop says it could not check.
STOP_CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
    non_retryable_error_types=["VmNotFound"],
)
SHIP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
    non_retryable_error_types=["SnapshotGone", "IneligibleVm", "VmMovedDuringRun"],
)


class _RunDiscarded(Exception):
    """The VM moved while a run read it: the run's EBS snapshots are discarded and it retries."""


def _epoch(change_id: str) -> str:
    return change_id.split("/", 1)[0] if change_id else ""


@workflow.defn(name="SourceServerWorkflow")
class SourceServerWorkflow(LifecycleUpdates):
    @workflow.init
    def __init__(self, inp: SourceServerInput) -> None:
        self._inp = inp
        self._state: SourceServerState = inp.carried or SourceServerState(
            lifecycle_state=LCS.DISCOVERED.value,
            data_replication_state=DRS.STOPPED.value,
        )
        self._discovered: DiscoveredServer | None = inp.discovered
        self._run_task: asyncio.Task[None] | None = None
        self._wake = False
        self._interrupt_reason = ""
        self._progress: list[DiskProgress] = []
        self._current_run_id = ""
        self._runs_this_execution = 0
        self._granted: set[str] = set()
        self._waiting_for = ""
        self._retry: ActivityRetry | None = None
        self._holding_runs = False  # a cutover's final sync holds the schedule (lifecycle_updates)

    # ------------------------------------------------------------------ main loop

    @workflow.run
    async def run(self, inp: SourceServerInput) -> None:
        self._publish()
        while not self._state.archived:
            # A cutover's final sync holds the schedule: not even a wake-up starts a second
            # run beside it (it would take a second permit and a second VMware snapshot).
            if self._holding_runs or not (self._wake or self._due()):
                try:
                    # A durable timer that updates and signals interrupt.
                    await workflow.wait_condition(
                        lambda: self._state.archived or (self._wake and not self._holding_runs),
                        timeout=self._until_next_run(),
                    )
                except TimeoutError:
                    pass
                continue
            self._wake = False
            self._run_task = asyncio.create_task(self._replication_run())
            try:
                await self._run_task
            except asyncio.CancelledError:
                if not self._interrupt_reason:
                    raise  # the workflow itself was cancelled
            finally:
                self._run_task = None
                self._interrupt_reason = ""
            self._runs_this_execution += 1
            if self._should_continue_as_new() and not self._holding_runs:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    replace(self._inp, carried=self._state, discovered=self._discovered)
                )

    def _active(self) -> bool:
        return self._state.replicating and not self._state.paused and not self._holding_runs

    def _run_in_flight(self) -> bool:
        return self._run_task is not None

    def _due(self) -> bool:
        if not self._active():
            return False
        if not self._state.next_run_at:
            return True
        return workflow.now() >= datetime.fromisoformat(self._state.next_run_at)

    def _until_next_run(self) -> timedelta | None:
        if not self._active() or not self._state.next_run_at:
            return None
        left = datetime.fromisoformat(self._state.next_run_at) - workflow.now()
        return max(left, timedelta(seconds=1))

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > HISTORY_EVENTS_LIMIT
            or self._runs_this_execution >= self._inp.continue_as_new_after_runs
        )

    # ------------------------------------------------------------------ one run

    async def _replication_run(self, priority: RunPriority | None = None) -> None:
        """One run; `priority` is its class in the permit queue (default: initial sync when
        there is no chain yet, else incremental; a cutover passes CUTOVER_FINAL_SYNC)."""
        st = self._state
        st.run_counter += 1
        run_id = f"r{st.run_counter:06d}"
        self._current_run_id = run_id
        started = workflow.now()
        interval = max(MIN_INTERVAL_SECONDS, st.settings.interval_seconds)
        # Interval counted start to start; a run longer than the interval starts the next at once.
        st.next_run_at = (started + timedelta(seconds=interval)).isoformat()
        record = RunRecord(run_id=run_id, started_at=started.isoformat())
        st.runs = [*st.runs[-(MAX_RUN_RECORDS - 1):], record]
        first_sync = not st.chains
        if priority is None:
            priority = RunPriority.INITIAL_SYNC if first_sync else RunPriority.INCREMENTAL
        self._set(drs=DRS.INITIATING if first_sync else DRS.CREATING_SNAPSHOT)
        try:
            for attempt in range(1, MAX_MOVE_RETRIES + 1):
                try:
                    await self._attempt(run_id, attempt, record, priority)
                    break
                except _RunDiscarded as moved:
                    st.notes = [*st.notes[-9:], f"{run_id}: {moved}; run discarded and retried"]
                    if attempt == MAX_MOVE_RETRIES:
                        raise ApplicationError(
                            f"the VM kept moving during {MAX_MOVE_RETRIES} attempts of this run"
                        ) from moved
            record.outcome = "SUCCEEDED"
            st.last_error = ""
            if st.lifecycle_state in (LCS.DISCOVERED.value, LCS.NOT_READY.value):
                st.lifecycle_state = LCS.READY_FOR_TEST.value
            self._end_run(record, DRS.CONTINUOUS)
        except asyncio.CancelledError:
            record.outcome = "CANCELLED"
            record.reason = self._interrupt_reason or "workflow cancelled"
            self._end_run(record)
            raise
        except (ActivityError, ApplicationError) as err:
            if self._interrupt_reason:
                # A cancelled activity that waited for its own cleanup surfaces as an error.
                record.outcome = "CANCELLED"
                record.reason = self._interrupt_reason
                self._end_run(record)
                raise asyncio.CancelledError() from err
            record.outcome = "FAILED"
            record.reason = failure_text(err)
            st.last_error = f"{run_id}: {record.reason}"
            self._end_run(record, DRS.STALLED)
        if record.outcome == "SUCCEEDED":
            await self._apply_retention(run_id)

    def _end_run(self, record: RunRecord, drs: DRS | None = None) -> None:
        """Close the run's record. Called on each way out rather than in a `finally`, which
        would also run when the SDK discards an evicted workflow's coroutines."""
        record.finished_at = workflow.now().isoformat()
        self._progress = []
        self._retry = None
        self._current_run_id = ""
        self._set(drs=drs)

    async def _attempt(
        self, run_id: str, attempt: int, record: RunRecord, priority: RunPriority
    ) -> None:
        st = self._state
        sid = self._inp.source_server_id
        pre: PreflightResult = await workflow.execute_activity(
            "snapship.preflight",
            PreflightInput(
                sid,
                self._inp.vm_instance_uuid,
                run_id,
                self._discovered.facts.moref if self._discovered else "",
                vcenter_id=self._inp.vcenter_uuid,
            ),
            result_type=PreflightResult,
            **timeouts("snapship.preflight"),
            retry_policy=VCENTER_RETRY,
        )
        if not pre.eligibility.eligible:
            raise ApplicationError(
                "VM is ineligible: " + "; ".join(pre.eligibility.reasons), type="IneligibleVm"
            )
        # The permit comes before ensure-CBT: enabling CBT takes a stun snapshot, which VMware
        # counts like any other.
        permit = await self._acquire_permit(f"{sid}/{run_id}-a{attempt}", pre, priority)
        try:
            cbt: EnsureCbtResult = await workflow.execute_activity(
                "snapship.ensure_cbt",
                EnsureCbtInput(pre.vm_moref, sid, vcenter_id=self._inp.vcenter_uuid),
                result_type=EnsureCbtResult,
                **timeouts("snapship.ensure_cbt"),
                retry_policy=VCENTER_RETRY,
            )
        except (asyncio.CancelledError, ActivityError):
            await self._release_permit(permit)
            raise
        if cbt.changed and st.chains:
            st.notes = [*st.notes[-9:], f"{run_id}: CBT was off and has been enabled; full resync"]
            st.chains = []
        self._set(drs=DRS.CREATING_SNAPSHOT)
        snapshot: SnapshotInfo | None = None
        shipped: ShipResult | None = None
        sealing: ActivityHandle[GroupResult] | None = None
        removed = False
        group_id = f"{sid}/{run_id}-a{attempt}"
        creating = False
        try:
            creating = True
            snapshot = await workflow.execute_activity(
                "snapship.create_snapshot",
                CreateSnapshotInput(
                    sid, pre.vm_moref, f"{run_id}-a{attempt}", vcenter_id=self._inp.vcenter_uuid
                ),
                result_type=SnapshotInfo,
                **timeouts("snapship.create_snapshot"),
                retry_policy=VCENTER_RETRY,
            )
            plans = self._plan(snapshot, run_id)
            self._progress = [
                DiskProgress(
                    device_key=p.device_key,
                    label=p.label,
                    total_bytes=p.capacity_bytes,
                    full_sync=p.base_change_id is None,
                )
                for p in plans
            ]
            self._set(drs=DRS.PENDING_SNAPSHOT_SHIPPING)
            shipped = await self._ship(
                ShipInput(
                    source_server_id=sid,
                    vm_name=self._vm_name(),
                    vm_moref=pre.vm_moref,
                    snapshot_moref=snapshot.snapshot_moref,
                    run_id=run_id,
                    group_id=group_id,
                    point_in_time=snapshot.created_at,
                    disks=plans,
                    location=pre.location,
                    vcenter_id=self._inp.vcenter_uuid,
                    permit_coordinator_id=self._coordinator_id(),
                    permit_key=permit,
                )
            )
            # The ship's last progress signal may be up to half a minute old: its result is
            # the final word on every disk.
            done = {d.device_key: d for d in shipped.disks}
            self._progress = [
                replace(
                    p,
                    blocks_total=done[p.device_key].blocks_changed,
                    blocks_done=done[p.device_key].blocks_changed,
                    bytes_shipped=done[p.device_key].bytes_shipped,
                    full_sync=done[p.device_key].full_sync,
                )
                if p.device_key in done
                else p
                for p in self._progress
            ]
            moved: LocationCheckResult = await workflow.execute_activity(
                "snapship.location_check",
                LocationCheckInput(pre.vm_moref, pre.location, vcenter_id=self._inp.vcenter_uuid),
                result_type=LocationCheckResult,
                **timeouts("snapship.location_check"),
                retry_policy=VCENTER_RETRY,
            )
            snapshot_ids = [d.ebs_snapshot_id for d in shipped.disks]
            if moved.moved:
                await self._discard(snapshot_ids, f"VM moved during run: {moved.detail}")
                raise _RunDiscarded(f"VM moved during the run ({moved.detail})")
            # Nothing reads the VMware snapshot any more: remove it while EBS seals the group
            # instead of after (a run with nothing changed waited for both in turn).
            sealing = workflow.start_activity(
                "snapship.complete_group",
                GroupInput(sid, group_id, snapshot_ids),
                result_type=GroupResult,
                **timeouts("snapship.complete_group"),
                retry_policy=VCENTER_RETRY,
            )
            await self._remove_vmware_snapshot(pre.vm_moref, snapshot.snapshot_moref)
            removed = True
            # The snapshot is gone: its permit goes back now, not after the sealing.
            await self._release_permit(permit)
            group: GroupResult = await sealing
            if not group.complete:
                raise ApplicationError(f"snapshot group {group_id} did not complete")
        except (asyncio.CancelledError, ActivityError, ApplicationError, _RunDiscarded) as err:
            # Not a `finally`: an evicted workflow's coroutines must not schedule activities.
            if sealing is not None and not sealing.done():
                sealing.cancel()
            steps: list[Callable[[], Awaitable[None]]] = []
            if isinstance(err, asyncio.CancelledError) and shipped is not None:
                ids = [d.ebs_snapshot_id for d in shipped.disks]
                steps.append(lambda: self._discard(ids, "run cancelled before commit"))
            if snapshot is not None:
                if not removed:
                    moref = snapshot.snapshot_moref
                    steps.append(lambda: self._remove_vmware_snapshot(pre.vm_moref, moref))
            elif creating:
                # The create may have been interrupted before it reported the snapshot, or its
                # vCenter task may still be making it: find it by its name and remove it.
                steps.append(
                    lambda: self._remove_own_snapshots(pre.vm_moref, f"{run_id}-a{attempt}")
                )
            if not removed:
                steps.append(lambda: self._release_permit(permit))
            await self._clean_up(steps)
            raise
        # Commit: only now does the replication point move forward.
        assert shipped is not None and snapshot is not None
        by_key = {d.device_key: d for d in snapshot.disks}
        st.chains = [
            DiskChain(
                disk_uuid=d.disk_uuid,
                device_key=d.device_key,
                capacity_bytes=by_key[d.device_key].capacity_bytes,
                change_id=by_key[d.device_key].change_id,
                ebs_snapshot_id=d.ebs_snapshot_id,
                file_name=by_key[d.device_key].file_name,
            )
            for d in shipped.disks
        ]
        st.last_group_id = group_id
        st.last_group_time = snapshot.created_at
        record.group_id = group_id
        record.bytes_shipped = sum(d.bytes_shipped for d in shipped.disks)
        record.blocks_written = sum(d.blocks_written for d in shipped.disks)
        record.blocks_changed = sum(d.blocks_changed for d in shipped.disks)
        record.full_sync_disks = sum(1 for d in shipped.disks if d.full_sync)

    async def _apply_retention(self, run_id: str) -> None:
        """Delete the groups beyond the newest N once the run has ended: the new group is the
        run's result and is usable now, so the run does not wait for housekeeping (it cost a
        run with nothing changed half a second), and a retention that fails for good is a note
        retried after the next run, not a failed run."""
        st = self._state
        if st.settings.retention_groups <= 0:
            return
        try:
            await workflow.execute_activity(
                "snapship.apply_retention",
                RetentionInput(
                    self._inp.source_server_id,
                    st.settings.retention_groups,
                    self._protected_snapshots(),
                ),
                result_type=RetentionResult,
                **timeouts("snapship.apply_retention"),
                retry_policy=VCENTER_RETRY,
            )
        except ActivityError as err:
            if self._interrupt_reason:
                raise asyncio.CancelledError() from err  # paused or stopped meanwhile
            st.notes = [
                *st.notes[-9:],
                f"{run_id}: old snapshot groups not deleted ({failure_text(err)}); "
                "tried again after the next run",
            ]
            self._set()

    def _coordinator_id(self) -> str:
        return coordinator_id(self._inp.vcenter_uuid)

    async def _acquire_permit(self, key: str, pre: PreflightResult, priority: RunPriority) -> str:
        """Wait for this run's permit (vCenter, host and datastore caps) before any snapshot
        exists; a cancellation while waiting withdraws the request."""
        facts = self._discovered.facts if self._discovered else None
        host_label = facts.host_name if facts and facts.host == pre.location.host else ""
        request = PermitRequest(
            holder_id=self._inp.source_server_id,
            request_key=key,
            vm_name=self._vm_name(),
            priority=int(priority),
            host=pre.location.host,
            host_label=host_label or pre.location.host,
            disk_datastores=sorted(pre.location.disk_datastores.values())
            or list(pre.location.datastores[:1]),
            requested_at=workflow.now().isoformat(),
        )
        self._waiting_for = "waiting for a permit"
        self._set(drs=DRS.PENDING_SNAPSHOT_SHIPPING)
        try:
            while True:
                await workflow.execute_activity(
                    "snapship.request_permit",
                    RequestPermitInput(
                        self._inp.vcenter_uuid, workflow.info().task_queue, request
                    ),
                    **timeouts("snapship.request_permit"),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                )
                try:
                    await workflow.wait_condition(
                        lambda: key in self._granted, timeout=PERMIT_REQUEST_REFRESH
                    )
                    break
                except TimeoutError:
                    # Asking again is the same request (same key, same place in the queue);
                    # a coordinator that was terminated or reset meanwhile learns of us anew.
                    continue
        except asyncio.CancelledError:
            await self._release_permit(key)
            raise
        finally:
            self._waiting_for = ""
        return key

    async def _release_permit(self, key: str) -> None:
        """Give the permit back (or withdraw the request); finishes even while cancelled."""
        self._granted.discard(key)
        try:
            await self._to_the_end(
                workflow.get_external_workflow_handle(self._coordinator_id()).signal(
                    "release", PermitRelease(self._inp.source_server_id, key)
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # no coordinator: nothing is held there

    async def _ship(self, inp: ShipInput) -> ShipResult:
        try:
            result: ShipResult = await workflow.execute_activity(
                "snapship.ship",
                inp,
                result_type=ShipResult,
                task_queue=self._shipping_queue(),
                **timeouts("snapship.ship"),
                retry_policy=SHIP_RETRY,
                # Wait for the activity to clean up (its pending EBS snapshots) before the
                # VMware snapshot it reads from is removed.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "VmMovedDuringRun":
                # The activity already deleted what it had started.
                raise _RunDiscarded(cause.message) from err
            raise
        return result

    def _plan(self, snapshot: SnapshotInfo, run_id: str) -> list[DiskShipPlan]:
        """Decide per disk: incremental against the committed chain, or a full resync and why."""
        st = self._state
        chains = {(c.disk_uuid, c.device_key): c for c in st.chains}
        plans: list[DiskShipPlan] = []
        for d in snapshot.disks:
            chain = chains.pop((d.disk_uuid, d.device_key), None)
            base: str | None = None
            parent: str | None = None
            if chain is None:
                reason = "first sync" if not st.chains else "new disk"
            elif chain.capacity_bytes != d.capacity_bytes:
                reason = f"disk capacity changed {chain.capacity_bytes} -> {d.capacity_bytes}"
            elif not chain.change_id or not d.change_id:
                reason = "no CBT changeId recorded"
            elif _epoch(chain.change_id) != _epoch(d.change_id):
                reason = "CBT was reset (changeId epoch changed)"
            else:
                base, parent, reason = chain.change_id, chain.ebs_snapshot_id, "incremental"
            plans.append(
                DiskShipPlan(
                    device_key=d.device_key,
                    disk_uuid=d.disk_uuid,
                    label=d.label,
                    file_name=d.file_name,
                    capacity_bytes=d.capacity_bytes,
                    change_id=d.change_id,
                    base_change_id=base,
                    parent_snapshot_id=parent,
                    reason=reason,
                )
            )
        for gone in chains.values():
            st.notes = [
                *st.notes[-9:],
                f"{run_id}: disk {gone.device_key} ({gone.disk_uuid}) was removed from the VM; "
                f"its last replica is {gone.ebs_snapshot_id} in group {st.last_group_id}",
            ]
        return plans

    async def _discard(self, snapshot_ids: list[str], reason: str) -> None:
        if not snapshot_ids:
            return
        await self._to_the_end(
            workflow.start_activity(
                "snapship.discard_snapshots",
                DiscardInput(snapshot_ids, reason),
                **timeouts("snapship.discard_snapshots"),
                retry_policy=CLEANUP_RETRY,
            )
        )

    async def _remove_vmware_snapshot(self, vm_moref: str, snapshot_moref: str) -> None:
        await self._to_the_end(
            workflow.start_activity(
                "snapship.remove_snapshot",
                RemoveSnapshotInput(vm_moref, snapshot_moref, vcenter_id=self._inp.vcenter_uuid),
                **timeouts("snapship.remove_snapshot"),
                retry_policy=CLEANUP_RETRY,
            )
        )

    async def _remove_own_snapshots(self, vm_moref: str, run_id: str) -> None:
        await self._to_the_end(
            workflow.start_activity(
                "snapship.remove_own_snapshots",
                self._own_snapshots_input(vm_moref, run_id),
                result_type=RemoveOwnSnapshotsResult,
                **timeouts("snapship.remove_own_snapshots"),
                retry_policy=CLEANUP_RETRY,
            )
        )

    def _own_snapshots_input(self, vm_moref: str, run_id: str = "") -> RemoveOwnSnapshotsInput:
        return RemoveOwnSnapshotsInput(
            self._inp.source_server_id,
            self._inp.vm_instance_uuid,
            vm_moref,
            run_id=run_id,
            vcenter_id=self._inp.vcenter_uuid,
        )

    @staticmethod
    async def _clean_up(steps: list[Callable[[], Awaitable[None]]]) -> None:
        """Every step of a failed or cancelled attempt's cleanup runs, in order, even when a
        second cancellation (pause, then stop) arrives during one of them: a skipped step
        would leave a snapshot on the VM or a permit that no liveness check takes back (the
        holder is still running). The cancellation is re-raised after the last step."""
        cancelled = False
        for step in steps:
            try:
                await step()
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()

    @staticmethod
    async def _to_the_end(cleanup: Awaitable[Any]) -> None:
        """A cleanup always runs to the end, even while this run is being cancelled: nothing
        may be left on the VM. A cancellation that arrives meanwhile is re-raised after it."""
        cleanup = asyncio.ensure_future(cleanup)
        cancelled = False
        while True:
            try:
                await asyncio.shield(cleanup)
                break
            except asyncio.CancelledError:
                if cleanup.done():
                    break
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()

    async def _check_no_snapshot_left(self) -> str:
        """What `stop` may say about the VM, after asking vCenter (never assumed)."""
        moref = self._discovered.facts.moref if self._discovered else ""
        try:
            found: RemoveOwnSnapshotsResult = await workflow.execute_activity(
                "snapship.remove_own_snapshots",
                self._own_snapshots_input(moref),
                result_type=RemoveOwnSnapshotsResult,
                **timeouts("snapship.remove_own_snapshots"),
                retry_policy=STOP_CHECK_RETRY,
            )
        except ActivityError as err:
            return (
                f"could not check the VM for snapship's snapshots ({failure_text(err)}); "
                "the next start removes any it finds"
            )
        if found.remaining:
            return "snapship's snapshots still on the VM: " + ", ".join(found.remaining)
        if found.removed:
            return (
                f"checked: no snapshot of snapship remains on the VM (removed {len(found.removed)}"
                " left by the interrupted run)"
            )
        return "checked: no snapshot of snapship remains on the VM"

    def _shipping_queue(self) -> str:
        return self._inp.shipping_task_queue or SHIPPING_QUEUE

    def _vm_name(self) -> str:
        if self._discovered is not None:
            return self._discovered.facts.name
        return self._inp.vm_name

    # ------------------------------------------------------------------ state and attributes

    def _set(self, drs: DRS | None = None, lcs: LCS | None = None) -> None:
        if drs is not None:
            self._state.data_replication_state = drs.value
        if lcs is not None:
            self._state.lifecycle_state = lcs.value
        self._publish()

    def _publish(self) -> None:
        workflow.upsert_search_attributes(
            [
                sa.LIFECYCLE_STATE.value_set(self._state.lifecycle_state),
                sa.DATA_REPLICATION_STATE.value_set(self._state.data_replication_state),
                sa.REPLICATION_TYPE.value_set(ReplicationType.SNAPSHOT_SHIPPING.value),
                sa.VM_NAME.value_set(self._vm_name()),
                sa.VCENTER_HOST.value_set(self._inp.vcenter_host),
            ]
        )
        self._set_details()

    def _set_details(self) -> None:
        """The Web UI's current details (user metadata, not a command: safe in any handler)."""
        st = self._state
        r = self._retry
        retrying = (
            retry_line(r.next_attempt, r.max_attempts, r.message, r.next_try_at, None)
            if r is not None
            else ""
        )
        workflow.set_current_details(
            server_details(self._vm_name(), self._inp.vcenter_host, st.lifecycle_state,
                           st.data_replication_state, st.last_error, retrying)
        )

    def _interrupt(self, reason: str) -> None:
        if self._run_task is not None and not self._run_task.done():
            self._interrupt_reason = reason
            self._run_task.cancel()

    def _result(self, message: str) -> CommandResult:
        return CommandResult(
            accepted=True,
            message=message,
            lifecycle_state=self._state.lifecycle_state,
            data_replication_state=self._state.data_replication_state,
        )

    # ------------------------------------------------------------------ signals

    @workflow.signal(name="discovered")
    def discovered(self, found: DiscoveredServer) -> None:
        self._discovered = found
        if found.vanished:
            self._state.lifecycle_state = LCS.DISCONNECTED.value
            if self._state.replicating:
                self._state.replicating = False
                self._state.paused = False
                self._interrupt("the VM is no longer in vCenter")
                self._state.data_replication_state = DRS.DISCONNECTED.value
        elif self._state.lifecycle_state == LCS.DISCONNECTED.value:
            self._state.lifecycle_state = (
                LCS.READY_FOR_TEST.value if self._state.chains else LCS.DISCOVERED.value
            )
        self._publish()

    @workflow.signal(name="shipping_started")
    def shipping_started(self, started: ShippingStarted) -> None:
        if started.run_id.startswith(self._current_run_id) and self._current_run_id:
            first = not self._state.chains
            self._set(drs=DRS.INITIAL_SYNC if first else DRS.SHIPPING_SNAPSHOT)

    @workflow.signal(name="permit_granted")
    def permit_granted(self, grant: PermitGrant) -> None:
        self._granted.add(grant.request_key)

    @workflow.signal(name="permit_waiting")
    def permit_waiting(self, waiting: PermitWaiting) -> None:
        if waiting.request_key not in self._granted:
            self._waiting_for = waiting.waiting_for

    @workflow.signal(name="shipping_progress")
    def shipping_progress(self, progress: ShippingProgress) -> None:
        if progress.run_id.startswith(self._current_run_id) and self._current_run_id:
            self._progress = progress.disks

    @workflow.signal(name="activity_retrying")
    def activity_retrying(self, notice: ActivityRetry) -> None:
        """From the worker's fault boundary: an attempt failed and another comes (or one
        succeeded again). Only the current run's activities matter."""
        if not self._current_run_id:
            return
        if notice.recovered:
            if self._retry is not None and self._retry.activity == notice.activity:
                self._retry = None
        else:
            self._retry = notice
        self._set_details()

    # ------------------------------------------------------------------ updates

    @workflow.update(name="start_replication")
    def start_replication(self, req: StartReplicationRequest) -> CommandResult:
        st = self._state
        settings = ReplicationSettings(
            interval_seconds=req.interval_seconds or st.settings.interval_seconds,
            retention_groups=(
                req.retention_groups
                if req.retention_groups is not None
                else st.settings.retention_groups
            ),
        )
        st.settings = settings
        st.replicating = True
        st.paused = False
        st.next_run_at = ""
        self._wake = True
        if not st.chains and st.lifecycle_state == LCS.DISCOVERED.value:
            st.lifecycle_state = LCS.NOT_READY.value  # MGN: "Not ready" until the first group
        self._set(drs=DRS.INITIATING if not st.chains else DRS.CONTINUOUS)
        return self._result(
            f"replication started; a run every {settings.interval_seconds}s, "
            f"keeping {settings.retention_groups} snapshot groups"
        )

    @start_replication.validator
    def _validate_start(self, req: StartReplicationRequest) -> None:
        refuse_if_expired(req.not_after, workflow.now())
        st = self._state
        if st.archived:
            raise ValueError("the server is archived")
        if self._discovered is not None and self._discovered.vanished:
            raise ValueError("the VM is no longer in vCenter")
        if self._discovered is not None and not self._discovered.eligibility.eligible:
            raise ValueError(
                "the VM is not eligible: " + "; ".join(self._discovered.eligibility.reasons)
            )
        if st.replicating and not st.paused:
            raise ValueError("replication is already running")
        if st.paused:
            raise ValueError("replication is paused; resume it instead")
        if req.interval_seconds is not None and req.interval_seconds < MIN_INTERVAL_SECONDS:
            raise ValueError(f"interval must be at least {MIN_INTERVAL_SECONDS} seconds")
        if req.retention_groups is not None and req.retention_groups < 1:
            raise ValueError("retention must keep at least one snapshot group")

    @workflow.update(name="stop_replication")
    async def stop_replication(self, cmd: ReplicationCommand) -> CommandResult:
        st = self._state
        st.replicating = False
        st.paused = False
        st.next_run_at = ""
        self._interrupt(cmd.reason or "replication stopped")
        await workflow.wait_condition(lambda: self._run_task is None)
        if not st.chains and st.lifecycle_state == LCS.NOT_READY.value:
            st.lifecycle_state = LCS.DISCOVERED.value
        checked = await self._check_no_snapshot_left()
        self._set(drs=DRS.STOPPED)
        return self._result(f"replication stopped; {checked}")

    @stop_replication.validator
    def _validate_stop(self, cmd: ReplicationCommand) -> None:
        refuse_if_expired(cmd.not_after, workflow.now())
        if not self._state.replicating and not self._state.paused:
            raise ValueError("replication is not running")

    @workflow.update(name="pause_replication")
    async def pause_replication(self, cmd: ReplicationCommand) -> CommandResult:
        self._state.paused = True
        self._interrupt(cmd.reason or "replication paused")
        await workflow.wait_condition(lambda: self._run_task is None)
        self._set(drs=DRS.PAUSED)
        return self._result("replication paused; the last snapshot group is kept")

    @pause_replication.validator
    def _validate_pause(self, cmd: ReplicationCommand) -> None:
        refuse_if_expired(cmd.not_after, workflow.now())
        if not self._state.replicating:
            raise ValueError("replication is not running")
        if self._state.paused:
            raise ValueError("replication is already paused")

    @workflow.update(name="resume_replication")
    def resume_replication(self, cmd: ReplicationCommand) -> CommandResult:
        self._state.paused = False
        self._state.next_run_at = ""
        self._wake = True
        self._set(drs=DRS.CONTINUOUS if self._state.chains else DRS.INITIATING)
        return self._result("replication resumed; a run starts now")

    @resume_replication.validator
    def _validate_resume(self, cmd: ReplicationCommand) -> None:
        refuse_if_expired(cmd.not_after, workflow.now())
        if not self._state.paused:
            raise ValueError("replication is not paused")

    @workflow.update(name="run_now")
    def run_now(self, cmd: ReplicationCommand) -> CommandResult:
        # A run that has ended but is still deleting old groups (retention) takes the wake-up.
        if self._run_task is None or not self._current_run_id:
            self._wake = True
            return self._result("a run starts now")
        return self._result("a run is already in progress")

    @run_now.validator
    def _validate_run_now(self, cmd: ReplicationCommand) -> None:
        refuse_if_expired(cmd.not_after, workflow.now())
        if not self._state.replicating or self._state.paused:
            raise ValueError("replication is not running")
        if self._holding_runs:
            raise ValueError("a cutover's final sync is in progress; it is the next run")

    # ------------------------------------------------------------------ query

    @workflow.query(name="status")
    def status(self) -> SourceServerStatus:
        st = self._state
        found = self._discovered
        return SourceServerStatus(
            source_server_id=self._inp.source_server_id,
            vm_name=self._vm_name(),
            vcenter_host=self._inp.vcenter_host,
            replication_type=ReplicationType.SNAPSHOT_SHIPPING.value,
            lifecycle_state=st.lifecycle_state,
            data_replication_state=st.data_replication_state,
            replicating=st.replicating,
            paused=st.paused,
            eligible=found.eligibility.eligible if found else False,
            eligibility_reasons=list(found.eligibility.reasons) if found else [],
            warnings=list(found.eligibility.warnings) if found else [],
            tags=dict(found.tags) if found else {},
            disks=list(self._progress),
            last_group_id=st.last_group_id,
            last_group_time=st.last_group_time,
            lag_seconds=None,
            last_error=st.last_error,
            runs=list(st.runs),
            notes=list(st.notes),
            next_run_at=st.next_run_at if st.replicating and not st.paused else "",
            vanished=found.vanished if found else False,
            facts=found.facts if found else None,
            waiting_for=self._waiting_for,
            permit_coordinator_id=self._coordinator_id(),
            retry=self._retry,
            launch=st.launch,
            group_snapshot_ids=[c.ebs_snapshot_id for c in st.chains],
        )
