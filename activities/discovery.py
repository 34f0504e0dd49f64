"""The discovery activity: read the inventory, then signal-with-start one workflow per VM.

Why the upserts happen here and not in the workflow: 10,000 VMs of facts would be far beyond a
workflow payload; here they go straight from vCenter to each VM's own workflow as a "discovered"
signal (create-or-update through signal-with-start with USE_EXISTING), in batches, with a
heartbeat after each batch. Only counts return to the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError

from snapship import search_attributes as sa
from snapship.config import ClientConfig, VcenterSettings, source_server_id
from snapship.discovery import DiscoveryScan, scan_vcenter, vanished_server
from snapship.faults import classify
from snapship.messages import DiscoveredServer, SourceServerInput, SourceServerStatus
from snapship.states import DataReplicationState, LifeCycleState, ReplicationType
from snapship.summary import server_summary
from snapship.vcenters import display_name, shipping_task_queue
from workflows.discovery import DISCOVER_ACTIVITY, DiscoveryRequest, DiscoveryResult

SOURCE_SERVER_WORKFLOW = "SourceServerWorkflow"
DISCOVERED_SIGNAL = "discovered"
UPSERT_CONCURRENCY = 32
MAX_REPORTED_FAILURES = 20
HEARTBEAT_EVERY_S = 10.0

T = TypeVar("T")


def initial_search_attributes(
    cfg: ClientConfig, vm_name: str, vc: VcenterSettings | None = None
) -> TypedSearchAttributes:
    """What a new source-server workflow is listed with before its first status change."""
    vc = vc or cfg.vcenter
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.LIFECYCLE_STATE, LifeCycleState.DISCOVERED.value),
            SearchAttributePair(sa.DATA_REPLICATION_STATE, DataReplicationState.STOPPED.value),
            SearchAttributePair(sa.REPLICATION_TYPE, ReplicationType.SNAPSHOT_SHIPPING.value),
            SearchAttributePair(sa.VM_NAME, vm_name),
            SearchAttributePair(sa.VCENTER_HOST, vc.host),
        ]
    )


async def signal_with_start(
    client: Client,
    cfg: ClientConfig,
    vcenter_uuid: str,
    server: DiscoveredServer,
    vc: VcenterSettings | None = None,
) -> str:
    """Create the VM's workflow if needed and hand it the latest facts; returns the id."""
    vc = vc or cfg.vcenter
    vm_uuid = server.facts.instance_uuid
    workflow_id = source_server_id(vcenter_uuid, vm_uuid)
    await client.start_workflow(
        SOURCE_SERVER_WORKFLOW,
        SourceServerInput(
            source_server_id=workflow_id,
            vcenter_host=vc.host,
            vcenter_uuid=vcenter_uuid,
            vm_instance_uuid=vm_uuid,
            vm_name=server.facts.name,
            shipping_task_queue=shipping_task_queue(cfg, vc),
        ),
        id=workflow_id,
        task_queue=cfg.temporal.control_task_queue,
        start_signal=DISCOVERED_SIGNAL,
        start_signal_args=[server],
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=initial_search_attributes(cfg, server.facts.name, vc),
        # What the Web UI shows for the workflow without any setup (snapship.summary).
        static_summary=server_summary(server.facts.name, vc.host),
    )
    return workflow_id


def _batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    size = max(1, size)
    return [items[i : i + size] for i in range(0, len(items), size)]


async def upsert_servers(
    client: Client,
    cfg: ClientConfig,
    scan: DiscoveryScan,
    batch_size: int = 200,
    concurrency: int = UPSERT_CONCURRENCY,
    on_batch: Callable[[int, int], None] | None = None,
    vc: VcenterSettings | None = None,
) -> tuple[int, int, list[str]]:
    """Signal-with-start every scanned server. Returns (upserted, batches, failures)."""
    gate = asyncio.Semaphore(max(1, concurrency))
    upserted = 0
    failures: list[str] = []
    batches = _batches(scan.servers, batch_size)

    async def one(server: DiscoveredServer) -> bool:
        async with gate:
            try:
                await signal_with_start(client, cfg, scan.vcenter_uuid, server, vc)
                return True
            except Exception as exc:
                if len(failures) < MAX_REPORTED_FAILURES:
                    failures.append(f"{server.facts.name}: {classify(exc).message}")
                return False

    for index, batch in enumerate(batches):
        done = await asyncio.gather(*(one(s) for s in batch))
        upserted += sum(1 for ok in done if ok)
        if on_batch is not None:
            on_batch(index + 1, upserted)
    return upserted, len(batches), failures


async def known_servers(
    client: Client, cfg: ClientConfig, vcenter_uuid: str, vc: VcenterSettings | None = None
) -> dict[str, str]:
    """Running source-server workflows of this vCenter: workflow id -> VM name."""
    vc = vc or cfg.vcenter
    prefix = source_server_id(vcenter_uuid, "")
    query = (
        f'WorkflowType="{SOURCE_SERVER_WORKFLOW}" AND ExecutionStatus="Running" '
        f'AND {sa.VCENTER_HOST.name}="{vc.host}"'
    )
    found: dict[str, str] = {}
    async for execution in client.list_workflows(query):
        if not execution.id.startswith(prefix):
            continue
        name = execution.typed_search_attributes.get(sa.VM_NAME)
        found[execution.id] = str(name) if name else execution.id
    return found


async def mark_vanished(
    client: Client, cfg: ClientConfig, scan: DiscoveryScan, vc: VcenterSettings | None = None
) -> tuple[int, list[str]]:
    """Tell servers whose VM is gone; skip those already marked. Returns (count, failures)."""
    current = set(scan.ids())
    known = await known_servers(client, cfg, scan.vcenter_uuid, vc)
    count = 0
    failures: list[str] = []
    for workflow_id, name in sorted(known.items()):
        if workflow_id in current:
            continue
        handle = client.get_workflow_handle(workflow_id)
        try:
            status = await handle.query("status", result_type=SourceServerStatus)
            if status.vanished:
                continue
        except Exception:
            pass  # unknown: signal anyway, the workflow ignores a repeat
        try:
            await handle.signal(
                DISCOVERED_SIGNAL,
                vanished_server(workflow_id, name, scan.vcenter_uuid, cfg.source_server_tags),
            )
            count += 1
        except Exception as exc:
            failures.append(f"{name}: {classify(exc).message}")
    return count, failures


@contextlib.asynccontextmanager
async def _heartbeating(details: Callable[[], Any]) -> AsyncIterator[None]:
    """Heartbeat every few seconds while a long step (the inventory read) runs."""

    async def beat() -> None:
        while True:
            activity.heartbeat(details())
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_same_vcenter(vc: VcenterSettings, answered_uuid: str) -> None:
    """Refuse to discover a vCenter other than the one configured at that address (a DNS name
    moved, a vCenter rebuilt): its VMs would get workflows no activity can route back."""
    if vc.instance_uuid and answered_uuid.lower() != vc.instance_uuid.lower():
        raise ApplicationError(
            f"vCenter {display_name(vc)} now answers with instanceUuid {answered_uuid}, not "
            f"{vc.instance_uuid} it was added with; remove it and add it again "
            "(snapship vcenter remove / add) if it really is a different vCenter now",
            type="VcenterIdentityChanged",
            non_retryable=True,
        )


class DiscoveryActivities:
    """Activities of discovery; `deps` is the worker's WorkerDeps (config, secrets, vcenter())."""

    def __init__(self, deps: Any) -> None:
        self.deps = deps

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        return [self.discover_source_servers]

    def _scan(self, vcenter_id: str) -> DiscoveryScan:
        cfg: ClientConfig = self.deps.config
        with self.deps.vcenter(vcenter_id) as session:
            return scan_vcenter(session, cfg.client_vm_uuid, cfg.source_server_tags)

    @activity.defn(name=DISCOVER_ACTIVITY)
    async def discover_source_servers(self, request: DiscoveryRequest) -> DiscoveryResult:
        cfg: ClientConfig = self.deps.config
        started = time.monotonic()
        progress: dict[str, Any] = {"step": "inventory"}
        vc = self.deps.vcenter_settings(request.vcenter_id)
        # Failures are classified by the worker's fault boundary (bad credentials, TLS, an
        # unsupported vCenter: permanent; an unreachable one: retried).
        async with _heartbeating(lambda: dict(progress)):
            scan = await asyncio.to_thread(self._scan, request.vcenter_id)
        check_same_vcenter(vc, scan.vcenter_uuid)
        activity.logger.info(
            "discovery read %d VMs in %.1fs (%d round trips)",
            scan.vms_seen, scan.inventory_seconds, scan.round_trips,
        )
        client = activity.client()

        def on_batch(done_batches: int, upserted: int) -> None:
            progress.update(step="upsert", batches=done_batches, upserted=upserted)
            activity.heartbeat(dict(progress))

        upserted, batches, failures = await upsert_servers(
            client, cfg, scan, batch_size=request.batch_size, on_batch=on_batch, vc=vc
        )
        vanished, vanish_failures = await mark_vanished(client, cfg, scan, vc)
        failures = (failures + vanish_failures)[:MAX_REPORTED_FAILURES]
        if scan.servers and upserted == 0:
            # Nothing got through (Temporal unreachable?): let Temporal retry the whole pass.
            raise ApplicationError("No source server could be created or updated: " + failures[0])
        return DiscoveryResult(
            vcenter_host=vc.host,
            vcenter_uuid=scan.vcenter_uuid,
            vms_seen=scan.vms_seen,
            templates_skipped=scan.templates_skipped,
            client_vm_skipped=scan.client_vm_skipped,
            eligible=scan.eligible,
            ineligible=scan.ineligible,
            upserted=upserted,
            vanished=vanished,
            batches=batches,
            round_trips=scan.round_trips,
            inventory_seconds=round(scan.inventory_seconds, 3),
            duration_seconds=round(time.monotonic() - started, 3),
            failed=failures,
        )
