"""LaunchJobWorkflow's joining rules, on the real embedded Temporal server with fake launches.

A console job waits for the servers it expects; what it does with a server that is late, or that
the console skipped although the server went on, decides whether that VM is ever launched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from snapship.launch.messages import (
    GroupDisk,
    InitiatedBy,
    LaunchJobInput,
    LaunchJobState,
    LaunchServerInput,
    LaunchServerResult,
    LaunchSettings,
    LaunchTarget,
    ServerSkip,
    TerminateInput,
    TerminateResult,
)
from tests.workflows.history_files import record_history
from workflows.launch_job import LaunchJobWorkflow


class FakeLaunches:
    """Launches succeed; each server's launch waits until the test opens its gate."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.launched: list[str] = []

    def gate(self, sid: str) -> asyncio.Event:
        return self.gates.setdefault(sid, asyncio.Event())

    @activity.defn(name="snapship.launch_server")
    async def launch_server(self, inp: LaunchServerInput) -> LaunchServerResult:
        sid = inp.target.source_server_id
        await self.gate(sid).wait()
        self.launched.append(sid)
        return LaunchServerResult(
            f"i-{sid}", f"ami-{sid}", datetime.now(UTC).isoformat(), "running"
        )

    @activity.defn(name="snapship.terminate_instances")
    async def terminate_instances(self, inp: TerminateInput) -> TerminateResult:
        return TerminateResult(list(inp.instance_ids))


def target(sid: str) -> LaunchTarget:
    return LaunchTarget(
        source_server_id=sid,
        vm_name=sid,
        group_id=f"group-{sid}",
        disks=[GroupDisk(2000, f"snap-{sid}", 1)],
        settings=LaunchSettings(),
        instance_type="t3.medium",
        boot_mode="LEGACY_BIOS",
        kind="cutover",
    )


@asynccontextmanager
async def job(
    env: WorkflowEnvironment, fakes: FakeLaunches, expected: list[str], join_timeout: int
) -> AsyncIterator[WorkflowHandle]:
    client: Client = env.client
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[LaunchJobWorkflow],
        activities=[fakes.launch_server, fakes.terminate_instances],
    ):
        handle = await client.start_workflow(
            LaunchJobWorkflow.run,
            LaunchJobInput(
                job_id=job_id,
                initiated_by=InitiatedBy.START_CUTOVER.value,
                expected=expected,
                notify_servers=False,
                join_timeout_seconds=join_timeout,
            ),
            id=job_id,
            task_queue=queue,
        )
        try:
            yield handle
        finally:
            try:
                await handle.terminate("test over")
            except Exception:
                pass


async def wait_job(
    handle: WorkflowHandle, pred: Callable[[LaunchJobState], bool], timeout: float = 20
) -> LaunchJobState:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        st: LaunchJobState = await handle.query(LaunchJobWorkflow.job)
        if pred(st):
            return st
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last job state: {st}")
        await asyncio.sleep(0.2)


def server(st: LaunchJobState, sid: str) -> tuple[str, str, str]:
    s = next(s for s in st.servers if s.source_server_id == sid)
    return s.launch_status, s.instance_id, s.error


def events(st: LaunchJobState, sid: str) -> list[str]:
    return [e.event for e in st.log if e.source_server_id == sid]


async def test_a_target_after_the_join_timeout_is_launched_while_the_job_runs(
    temporal_env: WorkflowEnvironment,
) -> None:
    """The late server's final sync outlasted the join wait; its source may already be stopped,
    so dropping its target would leave it down with no instance and its server waiting."""
    fakes = FakeLaunches()
    async with job(temporal_env, fakes, ["vm-a", "vm-late"], join_timeout=2) as handle:
        await handle.signal(LaunchJobWorkflow.add_target, target("vm-a"))
        st = await wait_job(handle, lambda s: "SERVER_SKIPPED" in events(s, "vm-late"))
        assert server(st, "vm-late") == ("FAILED", "", "the server did not join the job in time")
        assert server(st, "vm-a")[0] == "IN_PROGRESS"

        # vm-a still launching: the job is open, and the late target is taken.
        await handle.signal(LaunchJobWorkflow.add_target, target("vm-late"))
        st = await wait_job(handle, lambda s: server(s, "vm-late")[0] == "IN_PROGRESS")
        fakes.gate("vm-late").set()
        fakes.gate("vm-a").set()
        final: LaunchJobState = await handle.result()
        await record_history(handle, "launch_job_late_target")
    assert final.status == "COMPLETED"
    assert server(final, "vm-late") == ("LAUNCHED", "i-vm-late", "")
    assert server(final, "vm-a") == ("LAUNCHED", "i-vm-a", "")
    assert sorted(fakes.launched) == ["vm-a", "vm-late"]
    assert events(final, "vm-late") == ["SERVER_SKIPPED", "USING_PREVIOUS_SNAPSHOT", "LAUNCH_START"]


async def test_a_skip_for_a_server_that_joined_does_not_fail_its_launch(
    temporal_env: WorkflowEnvironment,
) -> None:
    """The console skips a server when its update call fails, even when the call only timed out
    and the server went on to join: the launch it joined for stands."""
    fakes = FakeLaunches()
    async with job(temporal_env, fakes, ["vm-a"], join_timeout=3600) as handle:
        await handle.signal(LaunchJobWorkflow.add_target, target("vm-a"))
        await wait_job(handle, lambda s: server(s, "vm-a")[0] == "IN_PROGRESS")
        await handle.signal(
            LaunchJobWorkflow.skip_server, ServerSkip("vm-a", "the update call timed out")
        )
        fakes.gate("vm-a").set()
        final: LaunchJobState = await handle.result()
        await record_history(handle, "launch_job_skip_after_join")
    assert server(final, "vm-a") == ("LAUNCHED", "i-vm-a", "")
    assert "SERVER_SKIPPED" not in events(final, "vm-a")


async def test_a_refused_server_is_skipped_and_the_job_ends(
    temporal_env: WorkflowEnvironment,
) -> None:
    """The other side of the rule: a skip before joining still ends the wait for that server."""
    fakes = FakeLaunches()
    fakes.gate("vm-a").set()
    async with job(temporal_env, fakes, ["vm-a", "vm-refused"], join_timeout=3600) as handle:
        await handle.signal(
            LaunchJobWorkflow.skip_server, ServerSkip("vm-refused", "no subnet is set")
        )
        await handle.signal(LaunchJobWorkflow.add_target, target("vm-a"))
        final: LaunchJobState = await asyncio.wait_for(handle.result(), 30)
        await record_history(handle, "launch_job_refused_server")
    assert final.status == "COMPLETED"
    assert server(final, "vm-refused") == ("FAILED", "", "no subnet is set")
    assert server(final, "vm-a") == ("LAUNCHED", "i-vm-a", "")
