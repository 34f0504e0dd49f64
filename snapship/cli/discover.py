"""`snapship discover`: run discovery now (and keep its schedule in place).

Decision: the periodic discovery is a Temporal Schedule per vCenter ("snapship-discovery" for the
first, "snapship-discovery-<vcenter id>" for each added one, every
`replication.discovery_interval_seconds` unless the vCenter sets its own, overlapping runs
skipped). `snapship discover` creates
or updates it and then runs one pass immediately and waits for its counts; `--schedule`
(alias `--schedule-only`) just ensures the schedule. Install does not touch Temporal (it may
not be running yet), so the first `snapship discover` after install is what starts periodic
discovery; the worker may call `ensure_discovery_schedule` at start as well (idempotent).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from snapship.config import ClientConfig, VcenterSettings
from snapship.vcenters import (
    discovery_interval_seconds,
    discovery_schedule_id,
    display_name,
    is_first,
    vcenter_id,
)
from workflows.discovery import (
    DISCOVERY_MANUAL_ID,
    DISCOVERY_WORKFLOW,
    DiscoveryRequest,
    DiscoveryResult,
)

RPC_TIMEOUT = timedelta(seconds=10)
# A worker that polls the control queue starts a pass within a second or two; past this the pass
# is terminated rather than left to run whenever a worker comes back.
PICKUP_TIMEOUT = 15.0
# WorkflowExecutionStarted, WorkflowTaskScheduled, WorkflowTaskStarted, WorkflowTaskCompleted.
_PICKED_UP_EVENTS = 4


class DiscoveryNotPickedUp(Exception):
    """No worker ran the pass in time; it was terminated, so it will not run later."""


def discovery_schedule(cfg: ClientConfig, vc: VcenterSettings | None = None) -> Schedule:
    vc = vc or cfg.vcenter
    interval = max(60, discovery_interval_seconds(cfg, vc))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DISCOVERY_WORKFLOW,
            DiscoveryRequest(reason="schedule", vcenter_id=_request_id(cfg, vc)),
            id=f"{discovery_schedule_id(cfg, vc)}-run",
            task_queue=cfg.temporal.control_task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=f"snapship discovery of vCenter {display_name(vc)}"),
    )


def _request_id(cfg: ClientConfig, vc: VcenterSettings) -> str:
    """The first vCenter's passes keep naming no vCenter, as they always did."""
    return "" if is_first(cfg, vc) else vcenter_id(vc)


async def ensure_discovery_schedule(
    client: Client, cfg: ClientConfig, vc: VcenterSettings | None = None
) -> str:
    """Create the discovery schedule, or bring an existing one up to date. Returns what it did."""
    vc = vc or cfg.vcenter
    schedule = discovery_schedule(cfg, vc)
    schedule_id = discovery_schedule_id(cfg, vc)
    try:
        await client.create_schedule(schedule_id, schedule, rpc_timeout=RPC_TIMEOUT)
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)

    def updater(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    await handle.update(updater, rpc_timeout=RPC_TIMEOUT)
    return "updated"


async def run_discovery(
    client: Client,
    cfg: ClientConfig,
    wait: bool = True,
    batch_size: int = 200,
    vc: VcenterSettings | None = None,
) -> DiscoveryResult | None:
    """Start one pass now (joining one already running) and, by default, wait for its counts."""
    vc = vc or cfg.vcenter
    request_id = _request_id(cfg, vc)
    handle = await client.start_workflow(
        DISCOVERY_WORKFLOW,
        DiscoveryRequest(reason="manual", batch_size=batch_size, vcenter_id=request_id),
        id=f"{DISCOVERY_MANUAL_ID}-{request_id}" if request_id else DISCOVERY_MANUAL_ID,
        task_queue=cfg.temporal.control_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=DiscoveryResult,
        rpc_timeout=RPC_TIMEOUT,
    )
    await wait_picked_up(handle)
    if not wait:
        return None
    result: DiscoveryResult = await handle.result()
    return result


async def wait_picked_up(handle: WorkflowHandle[object, DiscoveryResult]) -> None:
    """Return once a worker ran the pass's first workflow task; else terminate it and raise."""
    deadline = time.monotonic() + PICKUP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            info = await handle.describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError:
            info = None
        if info is not None and (info.history_length >= _PICKED_UP_EVENTS or info.close_time):
            return
        await asyncio.sleep(0.5)
    reason = f"no snapship worker started the discovery within {PICKUP_TIMEOUT:.0f} s"
    try:
        await handle.terminate(reason=reason, rpc_timeout=RPC_TIMEOUT)
    except RPCError:
        pass
    raise DiscoveryNotPickedUp(
        f"{reason}; it was cancelled and will not run later. Start the worker with "
        "`snapship worker` and run `snapship discover` again."
    )


def describe(result: DiscoveryResult) -> str:
    lines = [
        f"Discovered {result.upserted} source server(s) in vCenter {result.vcenter_host} "
        f"({result.eligible} eligible, {result.ineligible} not eligible).",
        f"  VMs seen {result.vms_seen}; templates skipped {result.templates_skipped}; "
        f"client VM skipped {result.client_vm_skipped}; vanished {result.vanished}",
        f"  inventory read in {result.inventory_seconds:.1f}s with {result.round_trips} "
        f"round trips; {result.batches} batch(es); total {result.duration_seconds:.1f}s",
    ]
    for failure in result.failed:
        lines.append(f"  failed: {failure}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule", "--schedule-only", dest="schedule_only", action="store_true",
                   help="only create/update the periodic discovery schedule")
    p.add_argument("--no-schedule", action="store_true",
                   help="run once without creating/updating the schedule")
    p.add_argument("--no-wait", action="store_true", help="start the pass and return")
    p.add_argument("--batch-size", type=int, default=200,
                   help="VMs upserted per batch (default 200)")
