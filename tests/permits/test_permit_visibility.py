"""A VM queued for a permit: no snapshot yet, and it says what it waits for in its status query,
in `snapship servers` (row and permit summary) and in the worker's metrics."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.permits import PermitActivities
from snapship.cli import render
from snapship.cli.console import ServerRow
from snapship.config import ClientConfig
from snapship.messages import (
    DiscoveredServer,
    Eligibility,
    SourceServerInput,
    SourceServerStatus,
    StartReplicationRequest,
    VmFacts,
)
from snapship.permit_messages import PermitLimits, coordinator_id
from snapship.permit_view import coordinator_views, summary_lines
from snapship.telemetry.metrics import SnapshipMetrics
from tests.permits.test_permit_coordinator import eventually
from tests.workflows.fakes import FakeActivities, FakeVm
from worker import publish_permits
from workflows.permits import PermitCoordinatorWorkflow
from workflows.source_server import SourceServerWorkflow

WAITING = "waiting for a slot on vCenter: 1 of 1 VMs shipping"


async def test_queued_vm_has_no_snapshot_and_says_what_it_waits_for(
    temporal_env: WorkflowEnvironment,
) -> None:
    client = temporal_env.client
    vc = f"vc-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Event()
    vms = {"first": FakeVm(ship_gate=gate), "second": FakeVm()}
    handles: dict[str, WorkflowHandle] = {}
    async with AsyncExitStack() as stack:
        for name, vm in vms.items():
            acts = FakeActivities(vm).all()
            control, shipping = f"c-{name}-{vc}", f"s-{name}-{vc}"
            permits = PermitActivities(lambda _vc: PermitLimits(vcenter_vms=1)).all()
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=control,
                    workflows=[SourceServerWorkflow, PermitCoordinatorWorkflow],
                    activities=acts + permits,
                )
            )
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=shipping,
                    activities=acts,
                    max_heartbeat_throttle_interval=timedelta(seconds=1),
                    default_heartbeat_throttle_interval=timedelta(seconds=1),
                )
            )
            wf_id = f"snapship-{vc}-{name}"
            handles[name] = await client.start_workflow(
                SourceServerWorkflow.run,
                SourceServerInput(
                    source_server_id=wf_id,
                    vcenter_host="vcenter.local",
                    vcenter_uuid=vc,
                    vm_instance_uuid=name,
                    vm_name=name,
                    shipping_task_queue=shipping,
                    discovered=DiscoveredServer(
                        VmFacts(moref="vm-1", name=name, instance_uuid=name),
                        Eligibility(True),
                        "2026-12-01T00:00:00+00:00",
                    ),
                ),
                id=wf_id,
                task_queue=control,
            )
            await handles[name].execute_update(
                SourceServerWorkflow.start_replication, StartReplicationRequest()
            )
            if name == "first":
                await eventually(lambda: ("ship", "r000001") in vms["first"].calls)
        try:
            second = handles["second"]

            async def waits() -> bool:
                st: SourceServerStatus = await second.query(SourceServerWorkflow.status)
                return st.waiting_for == WAITING

            await eventually(waits)
            st = await second.query(SourceServerWorkflow.status)
            assert st.data_replication_state == "PENDING_SNAPSHOT_SHIPPING"
            assert vms["second"].snapshots == []  # no snapshot waits for a slot
            row = ServerRow(
                workflow_id=st.source_server_id,
                vm_name="second",
                vcenter_host="vcenter.local",
                lifecycle_state=st.lifecycle_state,
                data_replication_state=st.data_replication_state,
                replication_type=st.replication_type,
                status=st,
            )
            assert render.row_cells(row)[-1] == WAITING
            views = await coordinator_views(client, {st.permit_coordinator_id})
            assert st.permit_coordinator_id == coordinator_id(vc) and len(views) == 1
            lines = summary_lines(views[0])
            assert lines[0] == "Shipping permits: 1 of 1 VMs hold one (first); 1 waiting"
            metrics = SnapshipMetrics()
            publish_permits(WorkerDeps(ClientConfig(), metrics=metrics), views)
            reg, label = metrics.registry, {"coordinator": coordinator_id(vc)}
            assert reg.get_sample_value("snapship_permits_held", label) == 1
            assert reg.get_sample_value("snapship_permits_waiting", label) == 1
            assert reg.get_sample_value("snapship_permits_cap", label) == 1
            gate.set()

            async def second_done() -> bool:
                s: SourceServerStatus = await second.query(SourceServerWorkflow.status)
                return any(r.outcome == "SUCCEEDED" for r in s.runs)

            await eventually(second_done)
            assert (await coordinator_views(client, {coordinator_id(vc)}))[0].vms_in_use == 0
        finally:
            for h in handles.values():
                await h.terminate("test over")
