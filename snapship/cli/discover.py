"""`snapship discover`: run discovery now (and keep its schedule in place).

Decision: the periodic discovery is a Temporal Schedule ("snapship-discovery", every
`replication.discovery_interval_seconds`, overlapping runs skipped). `snapship discover` creates
or updates it and then runs one pass immediately and waits for its counts; `--schedule`
(alias `--schedule-only`) just ensures the schedule. Install does not touch Temporal (it may
not be running yet), so the first `snapship discover` after install is what starts periodic
discovery; the worker may call `ensure_discovery_schedule` at start as well (idempotent).
"""

from __future__ import annotations

import argparse
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
)
from temporalio.common import WorkflowIDConflictPolicy

from snapship.config import ClientConfig
from workflows.discovery import (
    DISCOVERY_MANUAL_ID,
    DISCOVERY_SCHEDULE_ID,
    DISCOVERY_WORKFLOW,
    DiscoveryRequest,
    DiscoveryResult,
)


def discovery_schedule(cfg: ClientConfig) -> Schedule:
    interval = max(60, int(cfg.replication.discovery_interval_seconds))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DISCOVERY_WORKFLOW,
            DiscoveryRequest(reason="schedule"),
            id=f"{DISCOVERY_SCHEDULE_ID}-run",
            task_queue=cfg.temporal.control_task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=f"snapship discovery of vCenter {cfg.vcenter.host}"),
    )


async def ensure_discovery_schedule(client: Client, cfg: ClientConfig) -> str:
    """Create the discovery schedule, or bring an existing one up to date. Returns what it did."""
    schedule = discovery_schedule(cfg)
    try:
        await client.create_schedule(DISCOVERY_SCHEDULE_ID, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(DISCOVERY_SCHEDULE_ID)

    def updater(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    await handle.update(updater)
    return "updated"


async def run_discovery(
    client: Client, cfg: ClientConfig, wait: bool = True, batch_size: int = 200
) -> DiscoveryResult | None:
    """Start one pass now (joining one already running) and, by default, wait for its counts."""
    handle = await client.start_workflow(
        DISCOVERY_WORKFLOW,
        DiscoveryRequest(reason="manual", batch_size=batch_size),
        id=DISCOVERY_MANUAL_ID,
        task_queue=cfg.temporal.control_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=DiscoveryResult,
    )
    if not wait:
        return None
    result: DiscoveryResult = await handle.result()
    return result


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
