"""SIGKILL of the worker during a launch job: the job completes on the next worker with exactly
one instance per server (image name and RunInstances ClientToken derive from job + server)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from snapship.cli.lifecycle_client import start_launch_job, wait_job
from snapship.launch import ec2 as launch_ec2
from snapship.launch.messages import InitiatedBy
from tests.e2e.harness import runs_ok, sandbox, spawn_worker, wait_status

NAMES = ["api-01", "api-02"]


async def test_sigkill_during_launch_job_one_instance_per_server(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vms = [{"name": n, "disks": [{"capacity_mib": 1}]} for n in NAMES]
    async with sandbox(tmp_path, temporal_env, vms, run_worker_inline=False) as sb:
        log = tmp_path / "worker.log"
        worker = spawn_worker(sb.config, sb.sim.state_dir, log)
        try:
            handles = [await sb.start(n) for n in NAMES]
            for h in handles:
                await wait_status(h, runs_ok(1), timeout=240)
            # Instances come up slowly, so the kill lands after RunInstances, before the end.
            sb.aws.admin.set_faults(slow_actions={"ec2:DescribeInstances": 3.0})
            job = await start_launch_job(
                sb.client, sb.config.temporal.control_task_queue, InitiatedBy.START_TEST,
                [h.id for h in handles],
            )
            assert all(o.accepted for o in job.outcomes), job.outcomes
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while sb.aws.admin.stats()["requests"].get("ec2:RunInstances", 0) < len(NAMES):
                assert worker.poll() is None, log.read_text()[-3000:]
                assert loop.time() < deadline, "the launches never reached EC2"
                await asyncio.sleep(0.1)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            sb.aws.admin.reset_faults()
            worker = spawn_worker(sb.config, sb.sim.state_dir, log)
            state = await wait_job(sb.client, job.job_id, timeout_s=240)
            assert state.status == "COMPLETED", state
            assert [s.launch_status for s in state.servers] == ["LAUNCHED"] * len(NAMES), state
            # The retried activities called RunInstances again: EC2 answered with the same
            # instance (ClientToken), so each server has exactly one.
            assert sb.aws.admin.stats()["requests"]["ec2:RunInstances"] > len(NAMES)
            ec2 = sb.aws_clients().ec2
            for entry in state.servers:
                found = ec2.describe_instances(Filters=[
                    {"Name": f"tag:{launch_ec2.TAG_SOURCE_SERVER}",
                     "Values": [entry.source_server_id]},
                ])
                ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
                assert ids == [entry.instance_id], (entry, ids)
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)
