"""Console side of the lifecycle: one job over a selection, and the single-server commands.

A test or cutover over several servers is one LaunchJobWorkflow (MGN's StartTest/StartCutover take
a list): the console starts the job expecting the selection, then sends each server its Update
with the job id. A server that accepts joins the job; one that refuses is reported with its
reason and the job is told to skip it, so the job never waits for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError

from snapship.command_deadline import deadline_after
from snapship.error_text import one_line
from snapship.launch.messages import (
    InitiatedBy,
    LaunchJobInput,
    LaunchJobState,
    LaunchRequest,
    LifecycleCommand,
    ServerSkip,
)
from snapship.messages import CommandResult

LAUNCH_JOB_WORKFLOW = "LaunchJobWorkflow"
UPDATE_TIMEOUT = timedelta(seconds=60)
ACCEPTED_PEEK_S = 0.5
JOB_PREFIX = "snapship-job-"
SINGLE_COMMANDS = {
    "mark-ready": "mark_ready_for_cutover",
    "revert-test": "revert_to_ready_for_test",
    "revert-cutover": "revert_cutover",
    "finalize": "finalize_cutover",
    "terminate": "terminate_target_instances",
    "disconnect": "disconnect",
    "archive": "mark_archived",
}


@dataclass
class ServerOutcome:
    workflow_id: str
    accepted: bool
    message: str


@dataclass
class JobStart:
    job_id: str
    outcomes: list[ServerOutcome] = field(default_factory=list)


def new_job_id() -> str:
    return f"{JOB_PREFIX}{uuid.uuid4().hex[:12]}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return one_line(str(getattr(cause, "message", None) or cause or exc))
    if isinstance(exc, RPCError):
        return one_line(exc.message)
    return one_line(str(exc))


async def start_launch_job(
    client: Client,
    task_queue: str,
    initiated_by: InitiatedBy,
    workflow_ids: Sequence[str],
    request: LaunchRequest | None = None,
    job_id: str = "",
) -> JobStart:
    """Start one job over `workflow_ids` and have each server join it (or be skipped)."""
    job_id = job_id or new_job_id()
    await client.start_workflow(
        LAUNCH_JOB_WORKFLOW,
        LaunchJobInput(job_id=job_id, initiated_by=initiated_by.value,
                       expected=list(workflow_ids)),
        id=job_id,
        task_queue=task_queue,
    )
    job = client.get_workflow_handle(job_id)
    base = request or LaunchRequest()
    update = "start_test" if initiated_by is InitiatedBy.START_TEST else "start_cutover"

    async def one(wid: str) -> ServerOutcome:
        req = LaunchRequest(job_id=job_id, final_sync=base.final_sync, stop_mode=base.stop_mode,
                            not_after=deadline_after(UPDATE_TIMEOUT))
        handle = client.get_workflow_handle(wid)
        try:
            if update == "start_cutover":
                # A final sync takes a while: accepted is enough, the job reports the rest.
                started = await handle.start_update(
                    update, req, wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                    result_type=CommandResult, rpc_timeout=UPDATE_TIMEOUT,
                )
                try:
                    # A validator's refusal is already known here and raises at once.
                    done = await asyncio.wait_for(started.result(), ACCEPTED_PEEK_S)
                    return ServerOutcome(wid, done.accepted, done.message)
                except (TimeoutError, RPCTimeoutOrCancelledError):
                    # Still running (the poll was cut short): accepted, the job reports the rest.
                    return ServerOutcome(wid, True, "cutover accepted: final sync, then launch")
            result: CommandResult = await handle.execute_update(
                update, req, result_type=CommandResult, rpc_timeout=UPDATE_TIMEOUT
            )
            return ServerOutcome(wid, result.accepted, result.message)
        except (WorkflowUpdateFailedError, RPCError) as exc:
            reason = _reason(exc)
            await job.signal("skip_server", ServerSkip(wid, reason))
            return ServerOutcome(wid, False, reason)

    outcomes = await asyncio.gather(*(one(w) for w in workflow_ids))
    return JobStart(job_id, list(outcomes))


async def send_lifecycle(
    client: Client, workflow_id: str, command: str, arg: Any = None
) -> ServerOutcome:
    """One lifecycle Update on one server; a refusal comes back with its reason."""
    name = SINGLE_COMMANDS.get(command, command)
    if arg is None:
        arg = LifecycleCommand()
    if isinstance(arg, LifecycleCommand) and not arg.not_after:
        arg = replace(arg, not_after=deadline_after(UPDATE_TIMEOUT))
    handle = client.get_workflow_handle(workflow_id)
    try:
        result: CommandResult = await handle.execute_update(
            name, arg, result_type=CommandResult,
            rpc_timeout=UPDATE_TIMEOUT,
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
        return ServerOutcome(workflow_id, False, _reason(exc))
    return ServerOutcome(workflow_id, result.accepted, result.message)


async def job_state(client: Client, job_id: str) -> LaunchJobState:
    return await client.get_workflow_handle(job_id).query(
        "job", result_type=LaunchJobState
    )


async def wait_job(client: Client, job_id: str, timeout_s: float = 900.0) -> LaunchJobState:
    """Poll the job until COMPLETED (the job's own result is the same state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        state = await job_state(client, job_id)
        if state.status == "COMPLETED" or loop.time() > deadline:
            return state
        await asyncio.sleep(0.5)
