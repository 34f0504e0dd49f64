"""The permit coordinator's two Temporal-client steps, which workflow code cannot take itself.

`request_permit` is signal-with-start (start the vCenter's coordinator if it is not running, and
enqueue the request in one call); `permit_holders_alive` describes holders so a terminated or reset
run's permit comes back. Both are idempotent: a repeated request is the same request, a describe
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from snapship.permit_messages import (
    CoordinatorInput,
    LivenessInput,
    LivenessResult,
    PermitLimits,
    RequestPermitInput,
    coordinator_id,
)


class PermitActivities:
    def __init__(self, defaults: Callable[[str], PermitLimits]) -> None:
        """`defaults(vcenter_id)` gives the limits a vCenter's coordinator starts with (the
        worker's configuration); once running, the coordinator owns its limits and changes them
        by its `set_limits` update."""
        self._defaults = defaults

    def all(self) -> list[Callable[..., Any]]:
        return [self.request_permit, self.permit_holders_alive]

    @activity.defn(name="snapship.request_permit")
    async def request_permit(self, inp: RequestPermitInput) -> None:
        await activity.client().start_workflow(
            "PermitCoordinatorWorkflow",
            CoordinatorInput(vcenter_id=inp.vcenter_id, limits=self._defaults(inp.vcenter_id)),
            id=coordinator_id(inp.vcenter_id),
            task_queue=inp.task_queue,
            start_signal="request",
            start_signal_args=[inp.request],
        )

    @activity.defn(name="snapship.permit_holders_alive")
    async def permit_holders_alive(self, inp: LivenessInput) -> LivenessResult:
        """Which of these workflows no longer run (closed, or never existed)."""
        client = activity.client()
        gone: list[str] = []
        for wf_id in inp.holder_ids:
            activity.heartbeat()
            try:
                desc = await client.get_workflow_handle(wf_id).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    gone.append(wf_id)
                    continue
                raise
            if desc.status != WorkflowExecutionStatus.RUNNING:
                gone.append(wf_id)
        return LivenessResult(gone)
