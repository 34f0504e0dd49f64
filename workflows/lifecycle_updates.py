"""The migration lifecycle's Updates on SourceServerWorkflow (StartTest, mark ready, StartCutover
with a final sync, revert, FinalizeCutover, TerminateTargetInstances, Disconnect, MarkAsArchived,
launch settings), kept out of the replication loop's module.

Validators ask the pure rules (snapship.lifecycle) and refuse a wrong state with their reason.
Handlers move the lifecycle and hand launching to LaunchJobWorkflow (a job of the server's own,
or the console's job over a selection); the job reports back through `launch_outcome`.

A cutover's final sync holds the schedule (no run starts on its own), interrupts a run in flight
(it cleans up after itself), stops the guest, then runs one more run at once with the permit
class CUTOVER_FINAL_SYNC (served before every queued VM) and launches from exactly the group it
committed. The handler waits for all of that, so a continue-as-new never cuts it short; the main
loop does not continue-as-new while runs are held.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

from workflows.activity_options import timeouts
from workflows.failure_text import failure_text

with workflow.unsafe.imports_passed_through():
    from snapship.command_deadline import refuse_if_expired
    from snapship.launch.messages import (
        GroupDisk,
        InitiatedBy,
        LaunchJobInput,
        LaunchOutcome,
        LaunchRecord,
        LaunchRequest,
        LaunchSettings,
        LaunchStatus,
        LaunchTarget,
        LifecycleCommand,
        ServerLaunchState,
        ServerSkip,
        StartSourceInput,
        StopSourceInput,
        StopSourceResult,
        ValidateSettingsInput,
        ValidateSettingsResult,
    )
    from snapship.launch.settings import settings_problems
    from snapship.lifecycle import Command, LifecycleView, next_state, refusal
    from snapship.messages import (
        CommandResult,
        DiscoveredServer,
        SourceServerInput,
        SourceServerState,
    )
    from snapship.permit_messages import RunPriority
    from snapship.states import DataReplicationState as DRS
    from snapship.states import LifeCycleState as LCS

GIB = 1 << 30
POWER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
    non_retryable_error_types=["BadInput", "MissingPrivileges"],
)
STOP_MODES = ("shutdown", "power-off", "leave-running")


class LifecycleUpdates:
    """Mixed into SourceServerWorkflow; uses its state and its run loop's hooks."""

    _inp: SourceServerInput
    _state: SourceServerState
    _discovered: DiscoveredServer | None
    _wake: bool
    _holding_runs: bool
    _run_task: asyncio.Task[None] | None
    _interrupt_reason: str

    if TYPE_CHECKING:  # provided by SourceServerWorkflow

        def _interrupt(self, reason: str) -> None: ...
        def _publish(self) -> None: ...
        def _result(self, message: str) -> CommandResult: ...
        def _vm_name(self) -> str: ...
        def _run_in_flight(self) -> bool: ...
        async def _replication_run(self, priority: RunPriority | None = None) -> None: ...
        async def _check_no_snapshot_left(self) -> str: ...

    # ------------------------------------------------------------------ helpers

    @property
    def _launch(self) -> ServerLaunchState:
        return self._state.launch

    def _view(self) -> LifecycleView:
        ls = self._launch
        cut = ls.last_cutover
        return LifecycleView(
            lifecycle_state=self._state.lifecycle_state,
            archived=self._state.archived,
            has_complete_group=bool(self._state.chains),
            job_in_progress=ls.job_in_progress,
            cutover_launched=cut is not None and cut.launch_status == LaunchStatus.LAUNCHED.value,
            target_instances=len(ls.test_instances) + len(ls.cutover_instances),
            vm_present=not (self._discovered is not None and self._discovered.vanished),
        )

    def _check(self, cmd: Command, not_after: str = "") -> None:
        refuse_if_expired(not_after, workflow.now())
        why = refusal(cmd, self._view())
        if why:
            raise ValueError(why)

    def _move(self, cmd: Command) -> None:
        self._state.lifecycle_state = next_state(cmd, self._state.lifecycle_state)
        self._publish()

    def _new_job_id(self) -> str:
        return f"snapship-job-{workflow.uuid4().hex[:12]}"

    def _target(self, kind: str, terminate_first: list[str]) -> LaunchTarget:
        st = self._state
        facts = self._discovered.facts if self._discovered else None
        settings = self._launch.settings
        return LaunchTarget(
            source_server_id=self._inp.source_server_id,
            vm_name=self._vm_name(),
            group_id=st.last_group_id,
            disks=[
                GroupDisk(c.device_key, c.ebs_snapshot_id, math.ceil(c.capacity_bytes / GIB) or 1)
                for c in st.chains
            ],
            settings=settings,
            instance_type=settings.instance_type if settings.right_sizing == "NONE" else "",
            boot_mode="",
            kind=kind,
            tags=dict(self._discovered.tags) if self._discovered else {},
            terminate_first=list(terminate_first),
            num_cpu=facts.num_cpu if facts else 0,
            memory_mb=facts.memory_mb if facts else 0,
            firmware=facts.firmware if facts else "bios",
        )

    @staticmethod
    def _pin(record: LaunchRecord, target: LaunchTarget) -> None:
        record.group_id = target.group_id
        record.snapshot_ids = [d.snapshot_id for d in target.disks]

    def _protected_snapshots(self) -> list[str]:
        """Snapshots retention must keep: the groups of the last test and the last cutover."""
        ls = self._launch
        out: list[str] = []
        for rec in (ls.last_test, ls.last_cutover):
            if rec is not None:
                out.extend(rec.snapshot_ids)
        return out

    async def _hand_to_job(
        self, job_id: str, joined: bool, initiated_by: InitiatedBy,
        target: LaunchTarget | None = None, terminate: list[str] | None = None,
        record: LaunchRecord | None = None, back_to: str = "",
    ) -> None:
        """Join the console's job, or start a job of this server's own.

        When the hand-off fails (the console's job already ended, or the job id is taken) no
        job will ever report back: the server leaves "job in progress" and returns to
        `back_to`, the record says why, and the command fails with that line, instead of a
        server that refuses every later command while it waits for an outcome.
        """
        try:
            if joined and target is not None:
                await workflow.get_external_workflow_handle(job_id).signal("add_target", target)
                return
            inp = LaunchJobInput(
                job_id=job_id,
                initiated_by=initiated_by.value,
                targets=[target] if target is not None else [],
                terminate={self._inp.source_server_id: list(terminate)} if terminate else {},
            )
            await workflow.start_child_workflow(
                "LaunchJobWorkflow", inp, id=job_id, parent_close_policy=ParentClosePolicy.ABANDON
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:
            why = f"the launch could not be handed to job {job_id}: {failure_text(err)}"
            self._launch.job_in_progress = ""
            if record is not None:
                record.launch_status = LaunchStatus.FAILED.value
                record.error = why
            if back_to:
                self._state.lifecycle_state = back_to
            self._publish()
            raise ApplicationError(why, type="JobHandOffFailed", non_retryable=True) from None

    async def _stop_replication_for_good(self, reason: str) -> None:
        st = self._state
        st.replicating = False
        st.paused = False
        st.next_run_at = ""
        self._interrupt(reason)
        await workflow.wait_condition(lambda: not self._run_in_flight())
        st.data_replication_state = DRS.DISCONNECTED.value

    # ------------------------------------------------------------------ test

    @workflow.update(name="start_test")
    async def start_test(self, req: LaunchRequest) -> CommandResult:
        ls = self._launch
        job_id = req.job_id or self._new_job_id()
        ls.job_in_progress = job_id
        ls.last_test = LaunchRecord(job_id=job_id, initiated_at=workflow.now().isoformat(),
                                    launch_status=LaunchStatus.PENDING.value)
        before = self._state.lifecycle_state
        self._move(Command.START_TEST)
        target = self._target("test", terminate_first=ls.test_instances)
        self._pin(ls.last_test, target)
        await self._hand_to_job(job_id, bool(req.job_id), InitiatedBy.START_TEST, target,
                                record=ls.last_test, back_to=before)
        return self._result(f"test launch started in job {job_id} from {target.group_id}")

    @start_test.validator
    def _validate_start_test(self, req: LaunchRequest) -> None:
        self._check(Command.START_TEST, req.not_after)

    @workflow.update(name="mark_ready_for_cutover")
    async def mark_ready_for_cutover(self, cmd: LifecycleCommand) -> CommandResult:
        self._move(Command.MARK_READY_FOR_CUTOVER)
        ids = list(self._launch.test_instances)
        if cmd.terminate_test_instances and ids:
            job_id = cmd.job_id or self._new_job_id()
            self._launch.job_in_progress = job_id
            # Ready for cutover stands either way; only the termination was not handed off.
            await self._hand_to_job(job_id, False, InitiatedBy.TERMINATE, terminate=ids)
            return self._result(f"ready for cutover; test instances terminate in job {job_id}")
        return self._result("ready for cutover")

    @mark_ready_for_cutover.validator
    def _validate_mark_ready(self, cmd: LifecycleCommand) -> None:
        self._check(Command.MARK_READY_FOR_CUTOVER, cmd.not_after)

    @workflow.update(name="revert_to_ready_for_test")
    def revert_to_ready_for_test(self, cmd: LifecycleCommand) -> CommandResult:
        if self._launch.last_test is not None:
            self._launch.last_test.reverted_at = workflow.now().isoformat()
        self._move(Command.REVERT_TO_READY_FOR_TEST)
        return self._result("ready for testing again")

    @revert_to_ready_for_test.validator
    def _validate_revert_test(self, cmd: LifecycleCommand) -> None:
        self._check(Command.REVERT_TO_READY_FOR_TEST, cmd.not_after)

    # ------------------------------------------------------------------ cutover

    @workflow.update(name="start_cutover")
    async def start_cutover(self, req: LaunchRequest) -> CommandResult:
        ls = self._launch
        st = self._state
        job_id = req.job_id or self._new_job_id()
        ls.job_in_progress = job_id
        record = LaunchRecord(job_id=job_id, initiated_at=workflow.now().isoformat(),
                              launch_status=LaunchStatus.PENDING.value)
        ls.last_cutover = record
        ls.cutover_stop_mode = req.stop_mode
        self._move(Command.START_CUTOVER)
        if req.final_sync:
            failure = await self._final_sync(req, record)
            if failure:
                # Nothing launched: back to ready for cutover, the source as it was.
                await self._restart_source_if_we_stopped_it()
                ls.job_in_progress = ""
                record.launch_status = LaunchStatus.FAILED.value
                record.error = failure
                st.last_error = f"cutover: {failure}"
                st.lifecycle_state = LCS.READY_FOR_CUTOVER.value
                if req.job_id:
                    await workflow.get_external_workflow_handle(job_id).signal(
                        "skip_server", ServerSkip(self._inp.source_server_id, failure)
                    )
                self._publish()
                return self._result(f"cutover not launched: {failure}")
        target = self._target("cutover", terminate_first=[])
        self._pin(record, target)
        ls.final_sync_group = target.group_id if req.final_sync else ""
        try:
            await self._hand_to_job(job_id, bool(req.job_id), InitiatedBy.START_CUTOVER, target,
                                    record=record, back_to=LCS.READY_FOR_CUTOVER.value)
        except ApplicationError:
            await self._restart_source_if_we_stopped_it()
            raise
        return self._result(f"cutover launch started in job {job_id} from {target.group_id}")

    @start_cutover.validator
    def _validate_start_cutover(self, req: LaunchRequest) -> None:
        self._check(Command.START_CUTOVER, req.not_after)
        if req.stop_mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {', '.join(STOP_MODES)}")
        if req.final_sync and not self._state.replicating:
            raise ValueError("replication is not running, so no final sync can run; start it, "
                             "or cut over without a final sync")

    async def _final_sync(self, req: LaunchRequest, record: LaunchRecord) -> str:
        """Stop the guest and commit one more group; '' on success, else why not."""
        st = self._state
        self._holding_runs = True  # no run starts on its own from here
        try:
            self._interrupt("cutover: a final sync follows")
            await workflow.wait_condition(lambda: not self._run_in_flight())
            moref = self._discovered.facts.moref if self._discovered else ""
            try:
                stopped: StopSourceResult = await workflow.execute_activity(
                    "snapship.stop_source",
                    StopSourceInput(moref, req.stop_mode, vcenter_id=self._inp.vcenter_uuid),
                    result_type=StopSourceResult,
                    **timeouts("snapship.stop_source"),
                    retry_policy=POWER_RETRY,
                )
            except ActivityError as err:
                return f"the source VM could not be stopped: {failure_text(err)}"
            self._launch.powered_off_by_snapship = stopped.powered_off_by_us
            record.source_stopped_at = stopped.stopped_at if stopped.was_powered_on else ""
            # The final sync runs here, at once, ahead of every queued VM of its vCenter.
            self._run_task = asyncio.create_task(
                self._replication_run(RunPriority.CUTOVER_FINAL_SYNC)
            )
            try:
                await self._run_task
            except asyncio.CancelledError:
                if not self._interrupt_reason:
                    raise  # the workflow itself was cancelled
                return f"the final sync was interrupted: {self._interrupt_reason}"
            finally:
                self._run_task = None
                self._interrupt_reason = ""
            last = st.runs[-1] if st.runs else None
            if last is None or last.outcome != "SUCCEEDED":
                why = last.reason if last is not None else "no run"
                return f"the final sync did not complete: {why}"
            return ""
        finally:
            self._holding_runs = False

    @workflow.update(name="revert_cutover")
    async def revert_cutover(self, cmd: LifecycleCommand) -> CommandResult:
        ls = self._launch
        if ls.last_cutover is not None:
            ls.last_cutover.reverted_at = workflow.now().isoformat()
        notes = ["ready for cutover again"]
        if ls.cutover_instances:
            job_id = cmd.job_id or self._new_job_id()
            ls.job_in_progress = job_id
            await self._hand_to_job(job_id, False, InitiatedBy.TERMINATE,
                                    terminate=list(ls.cutover_instances))
            notes.append(f"the cutover instance terminates in job {job_id}")
        if await self._restart_source_if_we_stopped_it():
            notes.append("the source VM is powered on again")
        self._move(Command.REVERT_CUTOVER)
        if self._state.replicating:
            self._wake = True  # replication resumes with a run now
        return self._result("; ".join(notes))

    async def _restart_source_if_we_stopped_it(self) -> bool:
        ls = self._launch
        if not ls.powered_off_by_snapship or self._discovered is None:
            return False
        await workflow.execute_activity(
            "snapship.start_source",
            StartSourceInput(self._discovered.facts.moref, vcenter_id=self._inp.vcenter_uuid),
            result_type=bool,
            **timeouts("snapship.start_source"),
            retry_policy=POWER_RETRY,
        )
        ls.powered_off_by_snapship = False
        return True

    @revert_cutover.validator
    def _validate_revert_cutover(self, cmd: LifecycleCommand) -> None:
        self._check(Command.REVERT_CUTOVER, cmd.not_after)

    @workflow.update(name="finalize_cutover")
    async def finalize_cutover(self, cmd: LifecycleCommand) -> CommandResult:
        await self._stop_replication_for_good("cutover finalized")
        ls = self._launch
        if ls.last_cutover is not None:
            ls.last_cutover.finalized_at = workflow.now().isoformat()
        ls.finalized = True
        self._move(Command.FINALIZE_CUTOVER)
        # What the VM holds is asked of vCenter, never assumed (as `stop` does).
        checked = await self._check_no_snapshot_left()
        return self._result(
            f"cutover finalized: replication stopped; {checked}; "
            f"the cutover instance {', '.join(ls.cutover_instances) or '-'} is kept"
        )

    @finalize_cutover.validator
    def _validate_finalize(self, cmd: LifecycleCommand) -> None:
        self._check(Command.FINALIZE_CUTOVER, cmd.not_after)

    # ------------------------------------------------------------ terminate, disconnect, archive

    @workflow.update(name="terminate_target_instances")
    async def terminate_target_instances(self, cmd: LifecycleCommand) -> CommandResult:
        ls = self._launch
        ids = [*ls.test_instances, *ls.cutover_instances]
        job_id = cmd.job_id or self._new_job_id()
        ls.job_in_progress = job_id
        await self._hand_to_job(job_id, False, InitiatedBy.TERMINATE, terminate=ids)
        return self._result(f"terminating {', '.join(ids)} in job {job_id}")

    @terminate_target_instances.validator
    def _validate_terminate(self, cmd: LifecycleCommand) -> None:
        self._check(Command.TERMINATE_TARGET_INSTANCES, cmd.not_after)

    @workflow.update(name="disconnect")
    async def disconnect(self, cmd: LifecycleCommand) -> CommandResult:
        await self._stop_replication_for_good(cmd.reason or "disconnected")
        self._move(Command.DISCONNECT)
        return self._result("disconnected: replication stopped; launched instances are kept")

    @disconnect.validator
    def _validate_disconnect(self, cmd: LifecycleCommand) -> None:
        self._check(Command.DISCONNECT, cmd.not_after)

    @workflow.update(name="mark_archived")
    def mark_archived(self, cmd: LifecycleCommand) -> CommandResult:
        self._state.archived = True
        self._publish()
        return self._result("archived: the server leaves the default lists")

    @mark_archived.validator
    def _validate_archive(self, cmd: LifecycleCommand) -> None:
        self._check(Command.MARK_ARCHIVED, cmd.not_after)

    # ------------------------------------------------------------------ launch settings

    @workflow.update(name="update_launch_settings")
    async def update_launch_settings(self, settings: LaunchSettings) -> CommandResult:
        facts = self._discovered.facts if self._discovered else None
        checked: ValidateSettingsResult = await workflow.execute_activity(
            "snapship.validate_launch_settings",
            ValidateSettingsInput(
                settings,
                firmware=facts.firmware if facts else "bios",
                num_cpu=facts.num_cpu if facts else 0,
                memory_mb=facts.memory_mb if facts else 0,
            ),
            result_type=ValidateSettingsResult,
            **timeouts("snapship.validate_launch_settings"),
            retry_policy=POWER_RETRY,
        )
        if checked.problems:
            raise ApplicationError("launch settings refused: " + "; ".join(checked.problems),
                                   type="BadInput", non_retryable=True)
        self._launch.settings = settings
        chosen = f" (instance type {checked.instance_type})" if checked.instance_type else ""
        return self._result(f"launch settings saved; they apply to later launches{chosen}")

    @update_launch_settings.validator
    def _validate_settings(self, settings: LaunchSettings) -> None:
        self._check(Command.UPDATE_LAUNCH_SETTINGS)
        problems = settings_problems(settings)
        if problems:
            raise ValueError("; ".join(problems))

    # ------------------------------------------------------------------ job outcomes

    @workflow.signal(name="launch_outcome")
    def launch_outcome(self, out: LaunchOutcome) -> None:
        ls = self._launch
        if out.job_id == ls.job_in_progress:
            ls.job_in_progress = ""
        if out.initiated_by == InitiatedBy.TERMINATE.value:
            if out.launch_status == LaunchStatus.TERMINATED.value:
                gone = set(out.instance_id.split())
                ls.test_instances = [i for i in ls.test_instances if i not in gone]
                ls.cutover_instances = [i for i in ls.cutover_instances if i not in gone]
            else:
                self._state.last_error = f"termination failed: {out.error}"
            self._publish()
            return
        test = out.initiated_by == InitiatedBy.START_TEST.value
        record = ls.last_test if test else ls.last_cutover
        if record is None or record.job_id != out.job_id:
            return
        record.launch_status = out.launch_status
        record.error = out.error
        if out.launch_status == LaunchStatus.LAUNCHED.value:
            record.instance_id = out.instance_id
            record.launched_at = out.launched_at
            if test:
                ls.test_instances = [out.instance_id]  # the previous one was cleaned up first
            else:
                ls.cutover_instances = [out.instance_id]
                if record.source_stopped_at and out.launched_at:
                    record.downtime_seconds = max(0.0, (
                        datetime.fromisoformat(out.launched_at)
                        - datetime.fromisoformat(record.source_stopped_at)
                    ).total_seconds())
        else:
            kind = "test" if test else "cutover"
            self._state.last_error = f"{kind} launch failed: {out.error}"
        self._publish()
