"""DiscoveryWorkflow: one pass over the vCenter inventory, run on a schedule or on demand.

Why the work sits in one activity call: an inventory of 10,000 VMs is megabytes of facts; passing
it through workflow history would blow Temporal's payload limits and bloat every history. The
activity reads the inventory, pages through it in batches and signals-with-start one
SourceServerWorkflow per VM itself, returning only counts. Signals are idempotent updates of "the
VM as last seen", so a retried attempt simply sends them again.

This module is deterministic workflow code: it imports only pure modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.activity_options import timeouts

DISCOVERY_WORKFLOW = "DiscoveryWorkflow"
DISCOVER_ACTIVITY = "discover_source_servers"
DISCOVERY_SCHEDULE_ID = "snapship-discovery"
DISCOVERY_MANUAL_ID = "snapship-discovery-now"
DEFAULT_BATCH_SIZE = 200


@dataclass
class DiscoveryRequest:
    """What started this pass (for the record) and how many VMs to upsert per batch."""

    reason: str = "schedule"
    batch_size: int = DEFAULT_BATCH_SIZE
    vcenter_id: str = ""  # which vCenter to read (its instanceUuid); "" = the first


@dataclass
class DiscoveryResult:
    """Counts only: the facts themselves went straight to the source-server workflows."""

    vcenter_host: str = ""
    vcenter_uuid: str = ""
    vms_seen: int = 0
    templates_skipped: int = 0
    client_vm_skipped: int = 0
    eligible: int = 0
    ineligible: int = 0
    upserted: int = 0
    vanished: int = 0
    batches: int = 0
    round_trips: int = 0
    inventory_seconds: float = 0.0
    duration_seconds: float = 0.0
    failed: list[str] = field(default_factory=list)


@workflow.defn(name=DISCOVERY_WORKFLOW)
class DiscoveryWorkflow:
    @workflow.run
    async def run(self, request: DiscoveryRequest) -> DiscoveryResult:
        return await workflow.execute_activity(
            DISCOVER_ACTIVITY,
            request,
            result_type=DiscoveryResult,
            **timeouts(DISCOVER_ACTIVITY),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=5),
                maximum_attempts=5,
            ),
        )
