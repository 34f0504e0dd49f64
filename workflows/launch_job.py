"""LaunchJobWorkflow: one MGN-style job (StartTest, StartCutover, TerminateTargetInstances) over
a selection of source servers.

The job owns launching; the source servers own their lifecycle. A server joins a job with a
resolved LaunchTarget (in the input, or by the `add_target` signal once its own command was
accepted, e.g. after a cutover's final sync) and hears back through its `launch_outcome` signal.
Servers launch concurrently and one server's failure never fails the others. The job is durable:
its activities derive idempotency tokens from job + server, so a worker killed mid-launch resumes
and the server still gets exactly one instance.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.activity_options import timeouts
from workflows.failure_text import failure_text

with workflow.unsafe.imports_passed_through():
    from snapship.launch.messages import (
        InitiatedBy,
        JobEvent,
        JobLogEntry,
        JobStatus,
        JobType,
        LaunchJobInput,
        LaunchJobState,
        LaunchOutcome,
        LaunchServerInput,
        LaunchServerResult,
        LaunchStatus,
        LaunchTarget,
        ParticipatingServer,
        ServerSkip,
        TerminateInput,
        TerminateResult,
    )

# Patch: the job launches a target that comes after the join wait ended (below).
LATE_TARGETS = "late-targets"

LAUNCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=6,
    non_retryable_error_types=["BadInput"],
)
MAX_LOG = 500


@workflow.defn(name="LaunchJobWorkflow")
class LaunchJobWorkflow:
    @workflow.init
    def __init__(self, inp: LaunchJobInput) -> None:
        self._inp = inp
        job_type = (
            JobType.TERMINATE if inp.initiated_by == InitiatedBy.TERMINATE.value else JobType.LAUNCH
        )
        self._state = LaunchJobState(
            job_id=inp.job_id,
            type=job_type.value,
            initiated_by=inp.initiated_by,
            status=JobStatus.PENDING.value,
            creation_time=workflow.now().isoformat(),
        )
        self._pending: list[LaunchTarget] = list(inp.targets)
        self._skipped: dict[str, str] = {}
        self._joined: set[str] = set()
        for sid in [*inp.expected, *(t.source_server_id for t in inp.targets), *inp.terminate]:
            self._server(sid)

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, inp: LaunchJobInput) -> LaunchJobState:
        self._state.status = JobStatus.STARTED.value
        self._log(JobEvent.JOB_START)
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(self._terminate(sid, ids)) for sid, ids in inp.terminate.items()
        ]
        late = workflow.patched(LATE_TARGETS)
        joined = self._joined
        joined.update(t.source_server_id for t in self._pending)
        expected = set(inp.expected) | joined
        while True:
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending) or expected <= joined | set(self._skipped),
                    timeout=timedelta(seconds=inp.join_timeout_seconds),
                )
            except TimeoutError:
                arrived = {t.source_server_id for t in self._pending}
                for sid in sorted(expected - joined - arrived - set(self._skipped)):
                    self._skip(sid, "the server did not join the job in time")
            self._launch_pending(tasks)
            if expected <= joined | set(self._skipped):
                break
        if late:
            # A server skipped for the join timeout, or by a console whose update call only
            # timed out, may still hand its target over: its final sync took longer, and the
            # server now waits for this job's outcome. While any launch runs the job takes it;
            # once the job has closed, the server's hand-off fails and it says so itself.
            while True:
                await workflow.wait_condition(
                    lambda: bool(self._pending) or all(t.done() for t in tasks)
                )
                if not self._pending:
                    break
                self._launch_pending(tasks)
        await asyncio.gather(*tasks)
        self._log(JobEvent.JOB_END)
        self._state.status = JobStatus.COMPLETED.value
        self._state.end_time = workflow.now().isoformat()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    def _launch_pending(self, tasks: list[asyncio.Task[None]]) -> None:
        while self._pending:
            target = self._pending.pop(0)
            self._joined.add(target.source_server_id)
            tasks.append(asyncio.create_task(self._launch(target)))

    async def _launch(self, target: LaunchTarget) -> None:
        sid = target.source_server_id
        entry = self._server(sid)
        entry.error = ""  # a skip's reason, when the server joined after all
        if target.terminate_first:
            await self._cleanup(sid, target.terminate_first)
        self._log(JobEvent.USING_PREVIOUS_SNAPSHOT, sid, detail=target.group_id)
        self._log(JobEvent.LAUNCH_START, sid)
        entry.launch_status = LaunchStatus.IN_PROGRESS.value
        try:
            result: LaunchServerResult = await workflow.execute_activity(
                "snapship.launch_server",
                LaunchServerInput(self._inp.job_id, target),
                result_type=LaunchServerResult,
                **timeouts("snapship.launch_server"),
                retry_policy=LAUNCH_RETRY,
            )
        except ActivityError as err:
            entry.launch_status = LaunchStatus.FAILED.value
            entry.error = failure_text(err)
            self._log(JobEvent.LAUNCH_FAILED, sid, error=entry.error)
        else:
            entry.launch_status = LaunchStatus.LAUNCHED.value
            entry.instance_id = result.instance_id
            entry.image_id = result.image_id
            entry.launched_at = result.launched_at
        await self._notify(entry)

    async def _cleanup(self, sid: str, instance_ids: list[str]) -> bool:
        self._log(JobEvent.CLEANUP_START, sid, detail=" ".join(instance_ids))
        try:
            await workflow.execute_activity(
                "snapship.terminate_instances",
                TerminateInput(self._inp.job_id, sid, instance_ids),
                result_type=TerminateResult,
                **timeouts("snapship.terminate_instances"),
                retry_policy=LAUNCH_RETRY,
            )
        except ActivityError as err:
            self._log(JobEvent.CLEANUP_FAIL, sid, error=failure_text(err))
            return False
        self._log(JobEvent.CLEANUP_END, sid)
        return True

    async def _terminate(self, sid: str, instance_ids: list[str]) -> None:
        entry = self._server(sid)
        entry.launch_status = LaunchStatus.IN_PROGRESS.value
        if await self._cleanup(sid, instance_ids):
            entry.launch_status = LaunchStatus.TERMINATED.value
            entry.instance_id = " ".join(instance_ids)
        else:
            entry.launch_status = LaunchStatus.FAILED.value
            entry.error = self._state.log[-1].error
        await self._notify(entry)

    async def _notify(self, entry: ParticipatingServer) -> None:
        if not self._inp.notify_servers:
            return
        outcome = LaunchOutcome(
            job_id=self._inp.job_id,
            initiated_by=self._inp.initiated_by,
            source_server_id=entry.source_server_id,
            launch_status=entry.launch_status,
            instance_id=entry.instance_id,
            launched_at=entry.launched_at,
            error=entry.error,
        )
        try:
            await workflow.get_external_workflow_handle(entry.source_server_id).signal(
                "launch_outcome", outcome
            )
        except ApplicationError as err:  # the server's workflow is gone: the job still ends
            self._log(JobEvent.JOB_CANCEL, entry.source_server_id, error=str(err))

    # ------------------------------------------------------------------ state

    def _server(self, sid: str) -> ParticipatingServer:
        for s in self._state.servers:
            if s.source_server_id == sid:
                return s
        entry = ParticipatingServer(sid)
        self._state.servers.append(entry)
        return entry

    def _skip(self, sid: str, reason: str) -> None:
        self._skipped[sid] = reason
        entry = self._server(sid)
        entry.launch_status = LaunchStatus.FAILED.value
        entry.error = reason
        self._log(JobEvent.SERVER_SKIPPED, sid, error=reason)

    def _log(
        self, event: JobEvent, sid: str = "", error: str = "", detail: str = "",
        instance_id: str = "",
    ) -> None:
        entry = JobLogEntry(event.value, workflow.now().isoformat(), sid, instance_id, error,
                            detail)
        self._state.log = [*self._state.log[-(MAX_LOG - 1):], entry]

    # ------------------------------------------------------------------ messages

    @workflow.signal(name="add_target")
    def add_target(self, target: LaunchTarget) -> None:
        if self._state.status != JobStatus.COMPLETED.value:
            self._pending.append(target)

    @workflow.signal(name="skip_server")
    def skip_server(self, skip: ServerSkip) -> None:
        # A server that joined is launching: a console's skip (its update call timed out while
        # the server went on) must not mark it failed.
        joined = skip.source_server_id in self._joined or any(
            t.source_server_id == skip.source_server_id for t in self._pending
        )
        if self._state.status != JobStatus.COMPLETED.value and not joined:
            self._skip(skip.source_server_id, skip.reason)

    @workflow.query(name="job")
    def job(self) -> LaunchJobState:
        return self._state
