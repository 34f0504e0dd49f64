"""The permit coordinator's two Temporal-client steps, which workflow code cannot take itself.

`request_permit` is signal-with-start (start the vCenter's coordinator if it is not running, and
enqueue the request in one call); `permit_holders_alive` describes holders so a terminated or reset
run's permit comes back. Both are idempotent: a repeated request is the same request, a describe
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from snapship.ebs.throttle import Throttle
from snapship.messages import ShipInput
from snapship.permit_messages import (
    CoordinatorInput,
    LivenessInput,
    LivenessResult,
    PermitLimits,
    RequestPermitInput,
    Share,
    ShareQuery,
    coordinator_id,
)

log = logging.getLogger(__name__)


SHARE_QUERY_TIMEOUT = timedelta(seconds=5)


async def refresh_share(client: Client, inp: ShipInput, throttle: Throttle) -> None:
    """Set the throttle to this run's current share of the vCenter's budgets (its coordinator's
    `share` query); called every few seconds by the ship activity, so a changed limit or a VM
    joining or leaving applies within that period. Unreachable coordinator: keep the last share."""
    if not inp.permit_coordinator_id or not inp.permit_key:
        return
    try:
        share: Share = await client.get_workflow_handle(inp.permit_coordinator_id).query(
            "share",
            ShareQuery(inp.permit_key),
            result_type=Share,
            rpc_timeout=SHARE_QUERY_TIMEOUT,
        )
    except Exception as err:  # a query hiccup must not fail the shipping
        log.debug("could not read the budget share of %s: %s", inp.permit_key, err)
        return
    throttle.set_share(share.mbps, share.requests_per_second)


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
