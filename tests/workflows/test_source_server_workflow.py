"""SourceServerWorkflow's own rules, on the real embedded Temporal server with fake activities."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.permits import PermitActivities
from snapship import search_attributes as sa
from snapship.messages import (
    DiscoveredServer,
    Eligibility,
    ReplicationCommand,
    SourceServerInput,
    SourceServerStatus,
    StartReplicationRequest,
    VmFacts,
)
from snapship.permit_messages import PermitLimits
from tests.workflows.fakes import FakeActivities, FakeDisk, FakeVm
from tests.workflows.history_files import record_history
from workflows.permits import PermitCoordinatorWorkflow
from workflows.source_server import SourceServerWorkflow


def discovered(name: str = "web-01", eligible: bool = True) -> DiscoveredServer:
    return DiscoveredServer(
        facts=VmFacts(moref="vm-1", name=name, instance_uuid="i-1"),
        eligibility=Eligibility(eligible, [] if eligible else ["VM is a template"]),
        discovered_at="2026-11-25T00:00:00+00:00",
    )


@asynccontextmanager
async def running(
    env: WorkflowEnvironment, vm: FakeVm, **inp_kwargs: object
) -> AsyncIterator[tuple[Client, WorkflowHandle, str]]:
    client = env.client
    control = f"control-{uuid.uuid4().hex[:8]}"
    shipping = f"shipping-{uuid.uuid4().hex[:8]}"
    acts = FakeActivities(vm).all()
    permits = PermitActivities(lambda _vc: PermitLimits(vcenter_vms=50)).all()
    wf_id = f"snapship-test-{uuid.uuid4().hex[:12]}"
    async with (
        Worker(
            client,
            task_queue=control,
            workflows=[SourceServerWorkflow, PermitCoordinatorWorkflow],
            activities=acts + permits,
        ),
        Worker(
            client,
            task_queue=shipping,
            activities=acts,
            max_concurrent_activities=50,
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
        ),
    ):
        inp = SourceServerInput(
            source_server_id=wf_id,
            vcenter_host="vcenter.local",
            vcenter_uuid=f"vc-{wf_id[-12:]}",
            vm_instance_uuid="i-1",
            vm_name="web-01",
            shipping_task_queue=shipping,
            discovered=inp_kwargs.pop("discovered", discovered()),  # type: ignore[arg-type]
            **inp_kwargs,  # type: ignore[arg-type]
        )
        handle = await client.start_workflow(
            SourceServerWorkflow.run, inp, id=wf_id, task_queue=control
        )
        try:
            yield client, handle, wf_id
        finally:
            try:
                await handle.terminate("test over")
            except Exception:
                pass


async def status(handle: WorkflowHandle) -> SourceServerStatus:
    return await handle.query(SourceServerWorkflow.status)


async def wait_for(
    handle: WorkflowHandle, pred: Callable[[SourceServerStatus], bool], timeout: float = 30
) -> SourceServerStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        st = await status(handle)
        if pred(st):
            return st
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last status: {st}")
        await asyncio.sleep(0.2)


def succeeded(n: int) -> Callable[[SourceServerStatus], bool]:
    return lambda s: sum(r.outcome == "SUCCEEDED" for r in s.runs) >= n


async def test_runs_commit_chain_and_become_ready_for_test(
    temporal_env: WorkflowEnvironment,
) -> None:
    vm = FakeVm()
    async with running(temporal_env, vm) as (_client, handle, _wf_id):
        st = await status(handle)
        assert st.lifecycle_state == "DISCOVERED" and st.data_replication_state == "STOPPED"
        res = await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=5)
        )
        assert res.accepted
        st = await wait_for(handle, succeeded(2), timeout=40)
        assert st.lifecycle_state == "READY_FOR_TEST"
        assert st.replication_type == "SNAPSHOT_SHIPPING"
        # First run is a full sync without parent; the second builds on the first run's snapshots.
        first, second = vm.plans[0], vm.plans[1]
        assert all(p.base_change_id is None and p.parent_snapshot_id is None for p in first.disks)
        assert [p.parent_snapshot_id for p in second.disks] == [
            f"snap-{first.run_id}-2000",
            f"snap-{first.run_id}-2001",
        ]
        assert [p.base_change_id for p in second.disks] == ["epoch-a/1", "epoch-a/1"]
        # Every snapshot we created was removed, and removal came after the group completed.
        assert vm.snapshots == []
        names = [c[0] for c in vm.calls]
        assert names.index("complete_group") < names.index("remove_snapshot")
        # Typed search attributes are set for the console.
        desc = await handle.describe()
        attrs = desc.typed_search_attributes
        assert attrs.get(sa.LIFECYCLE_STATE) == "READY_FOR_TEST"
        assert attrs.get(sa.REPLICATION_TYPE) == "SNAPSHOT_SHIPPING"
        assert attrs.get(sa.VM_NAME) == "web-01"
        assert attrs.get(sa.VCENTER_HOST) == "vcenter.local"
        await record_history(handle, "fake_two_runs")


async def test_validators_reject_bad_transitions_with_reasons(
    temporal_env: WorkflowEnvironment,
) -> None:
    vm = FakeVm()
    async with running(temporal_env, vm, discovered=discovered(eligible=False)) as (_, handle, _id):
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(
                SourceServerWorkflow.start_replication, StartReplicationRequest()
            )
        assert "not eligible" in str(err.value.cause)
        for name in ("stop_replication", "pause_replication", "resume_replication"):
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await handle.execute_update(name, ReplicationCommand())
            assert "not" in str(err.value.cause)
        assert vm.calls == []


async def test_pause_resume_stop_leave_no_snapshot(temporal_env: WorkflowEnvironment) -> None:
    vm = FakeVm(ship_gate=asyncio.Event())
    async with running(temporal_env, vm) as (_, handle, _id):
        await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=5)
        )
        st = await wait_for(handle, lambda s: s.data_replication_state == "INITIAL_SYNC")
        assert vm.snapshots, "a VMware snapshot exists while shipping"
        res = await handle.execute_update(
            SourceServerWorkflow.pause_replication, ReplicationCommand()
        )
        assert res.data_replication_state == "PAUSED"
        assert vm.snapshots == [], "pausing mid-run removes the VMware snapshot"
        st = await status(handle)
        assert st.runs[-1].outcome == "CANCELLED" and st.lifecycle_state == "NOT_READY"
        assert vm.plans == [], "the cancelled run committed nothing"
        vm.ship_gate.set()
        await handle.execute_update(SourceServerWorkflow.resume_replication, ReplicationCommand())
        await wait_for(handle, succeeded(1))
        res = await handle.execute_update(
            SourceServerWorkflow.stop_replication, ReplicationCommand()
        )
        assert res.data_replication_state == "STOPPED"
        assert vm.snapshots == []
        st = await status(handle)
        assert not st.replicating and st.lifecycle_state == "READY_FOR_TEST"
        await record_history(handle, "fake_pause_resume_stop")


async def test_vmotion_during_run_discards_and_retries(temporal_env: WorkflowEnvironment) -> None:
    vm = FakeVm(move_during_next_runs=1)
    async with running(temporal_env, vm) as (_, handle, _id):
        await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=60)
        )
        st = await wait_for(handle, succeeded(1))
        assert len(vm.plans) == 2, "first attempt discarded, second committed"
        discarded_run = vm.plans[0]
        assert sorted(vm.discarded) == sorted(
            f"snap-{discarded_run.run_id}-{d.device_key}" for d in discarded_run.disks
        )
        assert any("moved" in n for n in st.notes)
        assert vm.snapshots == []
        # Both attempts were full syncs: the discarded attempt did not advance the chain.
        assert all(p.base_change_id is None for p in vm.plans[1].disks)
        await record_history(handle, "fake_vmotion_discard")


async def test_resync_rules_new_disk_capacity_and_epoch(temporal_env: WorkflowEnvironment) -> None:
    vm = FakeVm()
    async with running(temporal_env, vm) as (_, handle, _id):
        await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=5)
        )
        await wait_for(handle, succeeded(1))
        vm.disks[0].capacity += 1 << 20  # extended
        vm.disks[1].epoch = "epoch-b"  # CBT reset
        vm.disks.append(FakeDisk(2002, "disk-c", 1 << 20))  # added
        await wait_for(handle, succeeded(2), timeout=40)
        reasons = {p.device_key: p.reason for p in vm.plans[1].disks}
        assert "capacity changed" in reasons[2000]
        assert "CBT was reset" in reasons[2001]
        assert reasons[2002] == "new disk"
        assert all(p.parent_snapshot_id is None for p in vm.plans[1].disks)
        vm.disks.pop(0)  # removed disk
        st = await wait_for(handle, succeeded(3), timeout=40)
        assert any("was removed from the VM" in n for n in st.notes)
        assert [p.device_key for p in vm.plans[2].disks] == [2001, 2002]
        assert all(p.parent_snapshot_id for p in vm.plans[2].disks)


async def test_failed_run_keeps_last_good_point(temporal_env: WorkflowEnvironment) -> None:
    vm = FakeVm()
    async with running(temporal_env, vm) as (_, handle, _id):
        await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=5)
        )
        first = await wait_for(handle, succeeded(1))
        vm.ineligible = True
        st = await wait_for(handle, lambda s: any(r.outcome == "FAILED" for r in s.runs), 40)
        assert "ineligible" in st.last_error
        assert st.data_replication_state == "STALLED"
        assert st.last_group_id == first.last_group_id
        vm.ineligible = False
        await wait_for(handle, succeeded(2), timeout=40)
        # The run after the failure is incremental against the last good point.
        assert all(p.parent_snapshot_id for p in vm.plans[-1].disks)


async def test_retention_runs_after_the_run_and_its_failure_is_a_note(
    temporal_env: WorkflowEnvironment,
) -> None:
    vm = FakeVm(fail_retention=True)
    async with running(temporal_env, vm) as (_, handle, _id):
        await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=5)
        )
        st = await wait_for(handle, succeeded(2), timeout=40)
        # The groups are the runs' results: a failed clean-up of old ones fails no run.
        assert [r.outcome for r in st.runs[:2]] == ["SUCCEEDED", "SUCCEEDED"]
        st = await wait_for(handle, lambda s: any("not deleted" in n for n in s.notes))
        assert st.data_replication_state == "CONTINUOUS" and st.last_error == ""
        assert any("injected retention failure" in n for n in st.notes)
        names = [c[0] for c in vm.calls]
        assert names.index("retention") > names.index("complete_group")


async def test_continue_as_new_carries_state(temporal_env: WorkflowEnvironment) -> None:
    vm = FakeVm()
    async with running(temporal_env, vm, continue_as_new_after_runs=2) as (_, handle, _id):
        await handle.execute_update(
            SourceServerWorkflow.start_replication, StartReplicationRequest(interval_seconds=5)
        )
        st = await wait_for(handle, succeeded(3), timeout=60)
        desc = await handle.describe()
        assert desc.run_id != handle.result_run_id or desc.run_id != handle.first_execution_run_id
        assert st.lifecycle_state == "READY_FOR_TEST"
        assert all(p.parent_snapshot_id for p in vm.plans[2].disks), "chain carried over"
