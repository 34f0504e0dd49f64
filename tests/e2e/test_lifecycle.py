"""The migration lifecycle end to end on the sandbox: test, test again, ready, cutover with a final
sync, revert, cutover again, finalize, archive — and a job over three servers where one cannot
launch. Instances' disks are rebuilt from the snapshots their volumes came from and compared byte
for byte with the VMware snapshot of the final sync (which holds a guest write made just before
the cutover command)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from snapship.cli import console
from snapship.cli.lifecycle_client import start_launch_job, wait_job
from snapship.ebs.reader import read_snapshot
from snapship.launch import ec2 as launch_ec2
from snapship.launch.messages import (
    InitiatedBy,
    LaunchRequest,
    LaunchSettings,
    LifecycleCommand,
)
from snapship.messages import SourceServerStatus
from tests.e2e.harness import Sandbox, runs_ok, sandbox, wait_status
from workflows.source_server import SourceServerWorkflow

MIB = 1 << 20
VM = "app-01"
DISKS = [{"capacity_mib": 3}, {"capacity_mib": 2}]


async def refused(handle: WorkflowHandle, update: str, arg: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle.execute_update(update, arg)
    return str(getattr(exc.value.cause, "message", exc.value.cause))


def instance_disks(sb: Sandbox, instance_id: str) -> dict[str, str]:
    """Device name -> the snapshot the instance's volume was created from."""
    ec2 = sb.aws_clients().ec2
    view = launch_ec2.describe_instance(ec2, instance_id)
    vols = ec2.describe_volumes(VolumeIds=list(view.volumes.values()))["Volumes"]
    by_id = {v["VolumeId"]: v["SnapshotId"] for v in vols}
    return {dev: by_id[vid] for dev, vid in view.volumes.items()}


def instance_state(sb: Sandbox, instance_id: str) -> str:
    return launch_ec2.describe_instance(sb.aws_clients().ec2, instance_id).state


def launched(kind: str, job: str = "") -> Any:
    def pred(st: SourceServerStatus) -> bool:
        rec = st.launch.last_test if kind == "test" else st.launch.last_cutover  # type: ignore
        return rec is not None and rec.launch_status in ("LAUNCHED", "FAILED") and (
            not job or rec.job_id != job
        ) and not st.launch.job_in_progress  # type: ignore[union-attr]
    return pred


def disk_keys(sb: Sandbox) -> list[int]:
    return sorted(int(d["key"]) for d in sb.sim.admin.vm(VM)["disks"])


async def test_test_ready_cutover_revert_cutover_finalize(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    async with sandbox(tmp_path, temporal_env, [{"name": VM, "disks": DISKS}]) as sb:
        handle = await sb.start(VM, interval=3600)
        st = await wait_status(handle, runs_ok(1), timeout=180)
        assert st.lifecycle_state == "READY_FOR_TEST"
        # Wrong states are refused with a reason.
        why = await refused(handle, "start_cutover", LaunchRequest())
        assert why == "the server is ready for testing; start cutover needs it ready for cutover"
        why = await refused(handle, "mark_archived", LifecycleCommand())
        assert "needs it cutover complete or disconnected" in why
        why = await refused(handle, "update_launch_settings", LaunchSettings(boot_mode="EFI"))
        assert "boot mode must be one of" in why

        # Test: the instance's disks come from the newest group's snapshots, boot disk first.
        await handle.execute_update("start_test", LaunchRequest())
        st = await wait_status(handle, launched("test"), timeout=120)
        assert st.lifecycle_state == "TESTING" and st.launch is not None
        first = st.launch.last_test
        assert first is not None and first.launch_status == "LAUNCHED", first
        keys = disk_keys(sb)
        by_key = {c: s for c, s in zip(keys, sorted_group(st), strict=True)}
        assert instance_disks(sb, first.instance_id) == {
            "/dev/sda1": by_key[keys[0]], "/dev/sdb": by_key[keys[1]]
        }
        assert sorted(st.group_snapshot_ids) == sorted(by_key.values())

        # Test again: the first test instance is terminated first.
        await handle.execute_update("start_test", LaunchRequest())
        st = await wait_status(handle, launched("test", first.job_id), timeout=120)
        second = st.launch.last_test  # type: ignore[union-attr]
        assert second is not None and second.instance_id != first.instance_id
        assert instance_state(sb, first.instance_id) == "terminated"
        assert st.launch.test_instances == [second.instance_id]  # type: ignore[union-attr]

        await handle.execute_update("mark_ready_for_cutover",
                                    LifecycleCommand(terminate_test_instances=True))
        st = await wait_status(handle, lambda s: not s.launch.job_in_progress)  # type: ignore
        assert st.lifecycle_state == "READY_FOR_CUTOVER"
        assert instance_state(sb, second.instance_id) == "terminated"

        # Cutover with a final sync; then revert: the source runs again, replication resumes.
        assert sb.sim.admin.vm(VM)["power_state"] == "poweredOn"
        runs_before = len([r for r in st.runs if r.outcome == "SUCCEEDED"])
        await handle.execute_update("start_cutover", LaunchRequest())
        st = await wait_status(handle, launched("cutover"), timeout=180)
        cut1 = st.launch.last_cutover  # type: ignore[union-attr]
        assert cut1 is not None and cut1.launch_status == "LAUNCHED", cut1
        assert sb.sim.admin.vm(VM)["power_state"] == "poweredOff"
        await handle.execute_update("revert_cutover", LifecycleCommand())
        st = await wait_status(
            handle,
            lambda s: s.lifecycle_state == "READY_FOR_CUTOVER" and not s.launch.job_in_progress
            and sum(r.outcome == "SUCCEEDED" for r in s.runs) >= runs_before + 2,  # type: ignore
            timeout=180,
        )
        assert sb.sim.admin.vm(VM)["power_state"] == "poweredOn"
        assert instance_state(sb, cut1.instance_id) == "terminated"
        assert st.launch.last_cutover.reverted_at  # type: ignore[union-attr]

        # A guest write just before the cutover command must reach the cutover instance.
        marker = bytes(range(256)) * 2048  # 512 KiB
        sb.sim.admin.write(VM, 1 * MIB, marker, disk=keys[0])
        job = await start_launch_job(  # as `snapship cutover` does: one job, the server joins
            sb.client, sb.config.temporal.control_task_queue, InitiatedBy.START_CUTOVER,
            [handle.id],
        )
        assert job.outcomes[0].accepted, job.outcomes
        st = await wait_status(handle, launched("cutover", cut1.job_id), timeout=180)
        cut = st.launch.last_cutover  # type: ignore[union-attr]
        assert cut is not None and cut.launch_status == "LAUNCHED", cut
        assert st.lifecycle_state == "CUTTING_OVER"
        assert cut.downtime_seconds is not None and cut.downtime_seconds >= 0
        final = next(r for r in st.runs if r.group_id == st.launch.final_sync_group)  # type: ignore
        assert sb.verify_group(VM, st, final) == 2  # the group equals the VMware snapshot
        disks = instance_disks(sb, cut.instance_id)
        ebs = sb.aws_clients().ebs
        images = {k: p for name, imgs in sb.history_images(VM).items()
                  if name.endswith("@" + final.group_id.rsplit("/", 1)[1])
                  for k, p in imgs.items()}
        for dev, key in (("/dev/sda1", keys[0]), ("/dev/sdb", keys[1])):
            want = images[key].read_bytes()
            assert read_snapshot(ebs, disks[dev], len(want)) == want, dev
        boot = read_snapshot(ebs, disks["/dev/sda1"], 3 * MIB)
        assert boot[MIB:MIB + len(marker)] == marker

        why = await refused(handle, "start_test", LaunchRequest())
        assert why.startswith("the server is cutover in progress")
        await handle.execute_update("finalize_cutover", LifecycleCommand())
        st = await handle.query(SourceServerWorkflow.status)
        assert st.lifecycle_state == "CUTOVER" and not st.replicating
        assert st.data_replication_state == "DISCONNECTED"
        assert st.launch.last_cutover.finalized_at  # type: ignore[union-attr]
        vm = sb.sim.admin.vm(VM)
        assert vm["power_state"] == "poweredOff" and vm["snapshots"] == []
        assert instance_state(sb, cut.instance_id) == "running"  # kept
        await handle.execute_update("mark_archived", LifecycleCommand())
        await asyncio.wait_for(handle.result(), 30)
        # Archived: out of the default views, listed by the archived one (visibility catches up).
        for _ in range(60):
            archived = await console.list_rows(sb.client, console.VIEW_ARCHIVED)
            if any(r.workflow_id == handle.id for r in archived):
                break
            await asyncio.sleep(0.5)
        assert [r.vm_name for r in archived if r.workflow_id == handle.id] == [VM]
        everyone = await console.list_rows(sb.client, console.VIEW_ALL)
        assert handle.id not in {r.workflow_id for r in everyone}


def sorted_group(st: SourceServerStatus) -> list[str]:
    """The newest group's snapshot ids in device-key order (chains are kept in that order)."""
    return list(st.group_snapshot_ids)


async def test_job_over_three_servers_one_without_its_subnet(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    names = ["web-01", "web-02", "web-03"]
    vms = [{"name": n, "disks": [{"capacity_mib": 1}]} for n in names]
    async with sandbox(tmp_path, temporal_env, vms) as sb:
        handles = [await sb.start(n, interval=3600) for n in names]
        for h in handles:
            await wait_status(h, runs_ok(1), timeout=180)
        ec2 = sb.aws_clients().ec2
        vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
        await handles[2].execute_update("update_launch_settings", LaunchSettings(subnet_id=subnet))
        ec2.delete_subnet(SubnetId=subnet)
        why = await refused(handles[1], "update_launch_settings",
                            LaunchSettings(subnet_id=subnet))
        assert why == f"launch settings refused: subnet {subnet} does not exist"

        job = await start_launch_job(
            sb.client, sb.config.temporal.control_task_queue, InitiatedBy.START_TEST,
            [h.id for h in handles],
        )
        assert all(o.accepted for o in job.outcomes), job.outcomes
        state = await wait_job(sb.client, job.job_id, timeout_s=180)
        assert state.status == "COMPLETED" and state.type == "LAUNCH"
        by_server = {s.source_server_id: s for s in state.servers}
        ok = [by_server[h.id] for h in handles[:2]]
        bad = by_server[handles[2].id]
        assert [s.launch_status for s in ok] == ["LAUNCHED", "LAUNCHED"]
        assert all(instance_state(sb, s.instance_id) == "running" for s in ok)
        assert bad.launch_status == "FAILED"
        assert "InvalidSubnetID.NotFound" in bad.error and subnet in bad.error
        events = [e.event for e in state.log]
        assert events[0] == "JOB_START" and events[-1] == "JOB_END"
        assert [e.source_server_id for e in state.log if e.event == "LAUNCH_FAILED"] == [
            handles[2].id]
        st = await wait_status(handles[2], lambda s: not s.launch.job_in_progress)  # type: ignore
        assert st.last_error.startswith("test launch failed: RunInstances failed")
        assert "\n" not in st.last_error
        # A refused server is skipped by the job with its reason.
        job2 = await start_launch_job(
            sb.client, sb.config.temporal.control_task_queue, InitiatedBy.START_CUTOVER,
            [handles[0].id],
        )
        assert not job2.outcomes[0].accepted
        assert "needs it ready for cutover" in job2.outcomes[0].message
        state2 = await wait_job(sb.client, job2.job_id, timeout_s=60)
        assert [e.event for e in state2.log] == ["JOB_START", "SERVER_SKIPPED", "JOB_END"]
