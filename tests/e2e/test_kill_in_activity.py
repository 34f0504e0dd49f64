"""A worker SIGKILLed inside each control activity of a run: a new worker retries it within the
activity's heartbeat timeout (seconds), not its start-to-close (minutes to hours). (A kill inside
shipping is test_crash_restart's.)

Each activity is made slow at the far end (a slow vCenter call or task, a slow EBS seal or EC2
answer) so the kill lands inside it; the server's pending-activity view says when it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.config import ClientConfig
from tests.e2e.harness import Sandbox, runs_ok, sandbox, wait_status
from tests.e2e.kills import WorkerProcess, wait_retried, wait_started
from workflows.activity_options import TIMEOUTS

MIB = 1024 * 1024
SLACK_S = 20.0
"""Worker start-up (imports, vCenter login) and the first retry interval, on a loaded machine."""


def small_window(config: ClientConfig) -> None:
    config.replication.ebs_concurrency = 4
    config.replication.checkpoint_every_blocks = 4


def steps(sb: Sandbox) -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(activity, make it slow, make it fast again), in the order a first run meets them."""
    vc, aws = sb.sim.admin, sb.aws.admin
    return [
        (
            "snapship.preflight",
            lambda: vc.delay_calls("HasPrivilegeOnEntities", 6),
            lambda: vc.delay_calls("HasPrivilegeOnEntities", 0),
        ),
        (
            "snapship.ensure_cbt",
            lambda: vc.delay_tasks("ReconfigVM", 6),
            lambda: vc.delay_tasks("ReconfigVM", 0),
        ),
        (
            "snapship.create_snapshot",
            lambda: vc.delay_tasks("CreateSnapshot", 6),
            lambda: vc.delay_tasks("CreateSnapshot", 0),
        ),
        (
            "snapship.location_check",
            lambda: vc.delay_calls("RetrievePropertiesEx", 2),
            lambda: vc.delay_calls("RetrievePropertiesEx", 0),
        ),
        (
            # Starts together with complete_group (the snapshot goes while EBS seals); slow, it
            # is the one the kill lands in first, and complete_group's retry is next.
            "snapship.remove_snapshot",
            lambda: vc.delay_tasks("RemoveSnapshot", 6),
            lambda: vc.delay_tasks("RemoveSnapshot", 0),
        ),
        (
            # Waits for the seal and reads the group through EC2 DescribeSnapshots.
            "snapship.complete_group",
            lambda: aws.set_faults(slow_actions={"ec2:DescribeSnapshots": 4}),
            lambda: None,
        ),
        (
            "snapship.apply_retention",
            lambda: aws.set_faults(slow_actions={"ec2:DescribeSnapshots": 4}),
            lambda: aws.set_faults(slow_actions={}),
        ),
    ]


@pytest.mark.slow
async def test_kill_inside_each_activity_is_retried_within_its_heartbeat_timeout(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "kill-01", "disks": [{"capacity_mib": 32}]}
    async with sandbox(
        tmp_path, temporal_env, [vm], run_worker_inline=False, tune=small_window
    ) as sb:
        sb.sim.admin.write("kill-01", 0, length=32 * MIB, random_seed=11)
        worker = WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / "worker.log")
        worker.start()
        plan = steps(sb)
        recovery: dict[str, float] = {}
        try:
            plan[0][1]()
            handle = await sb.start("kill-01")
            for i, (name, _slow, fast) in enumerate(plan):
                running = await wait_started(handle, name, worker)
                killed_at = worker.restart_after_kill()
                if i + 1 < len(plan):
                    plan[i + 1][1]()  # the next step is slow before the retry reaches it
                retried_at = await wait_retried(handle, running, timeout=180)
                fast()
                recovery[name] = retried_at - killed_at
            st = await wait_status(handle, runs_ok(1), timeout=180)
        finally:
            worker.stop()
        print("\nkill -> retry running (s):", {k: round(v, 1) for k, v in recovery.items()})
        for name, took in recovery.items():
            row = TIMEOUTS[name]
            bound = row["heartbeat_timeout"].total_seconds() + SLACK_S
            assert took <= bound, f"{name}: retried {took:.1f}s after the kill (bound {bound}s)"
            assert bound < row["start_to_close_timeout"].total_seconds()
        assert set(recovery) == {name for name, _s, _f in plan}
        assert sb.verify_group("kill-01", st, st.runs[-1]) == 1
        assert sb.sim.admin.vm("kill-01")["snapshots"] == []


async def test_kill_during_the_cbt_activation_stun_leaves_no_snapshot(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    """The stun snapshot that makes CBT track is made and removed inside ensure_cbt. Killed
    between the two, the vCenter task still finishes the snapshot and CBT is then tracking, so
    the retry has no stun to take and nothing to remove: the run must still leave no snapshot
    (a CI run of the worker fleet test found one left behind after every VM had succeeded)."""
    vm = {"name": "stun-01", "disks": [{"capacity_mib": 4}]}
    async with sandbox(tmp_path, temporal_env, [vm], run_worker_inline=False) as sb:
        sb.sim.admin.write("stun-01", 0, length=4 * MIB, random_seed=12)
        worker = WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / "worker.log")
        worker.start()
        try:
            sb.sim.admin.delay_tasks("CreateSnapshot", 4)
            handle = await sb.start("stun-01")
            running = await wait_started(handle, "snapship.ensure_cbt", worker)
            while not sb.sim.admin.vm("stun-01")["cbt"]:
                await asyncio.sleep(0.05)  # CBT is configured: the stun's create comes next
            await asyncio.sleep(1.0)  # inside the stun's (4 s) CreateSnapshot task
            worker.restart_after_kill()
            sb.sim.admin.delay_tasks("CreateSnapshot", 0)
            await wait_retried(handle, running, timeout=120)
            st = await wait_status(handle, runs_ok(1), timeout=180)
        finally:
            worker.stop()
        assert sb.sim.admin.vm("stun-01")["snapshots"] == []
        assert sb.sim.admin.snapshot_census()["vms_now"] == 0
        assert sb.verify_group("stun-01", st, st.runs[-1]) == 1
