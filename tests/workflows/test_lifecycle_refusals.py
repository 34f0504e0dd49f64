"""Every lifecycle Update of SourceServerWorkflow refuses a wrong state with its reason, through
Temporal (validators run before anything is recorded), on fake activities."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from snapship.command_deadline import EXPIRED_MESSAGE
from snapship.launch.messages import LaunchRequest, LaunchSettings, LifecycleCommand
from snapship.messages import StartReplicationRequest
from tests.workflows.fakes import FakeVm
from tests.workflows.test_source_server_workflow import running, succeeded, wait_for
from workflows.source_server import SourceServerWorkflow


async def reason(handle: WorkflowHandle, name: str, arg: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await handle.execute_update(name, arg)
    return str(getattr(exc.value.cause, "message", exc.value.cause))


async def test_lifecycle_commands_refused_in_wrong_states(
    temporal_env: WorkflowEnvironment,
) -> None:
    async with running(temporal_env, FakeVm()) as (_client, handle, _wf_id):
        # Not started: nothing to launch, nothing to cut over or archive.
        expected = {
            "start_test": "the server is not started; start test needs it ready for cutover or "
                          "ready for testing or test in progress",
            "mark_ready_for_cutover": "the server is not started; mark ready for cutover needs it "
                                      "test in progress",
            "revert_to_ready_for_test": "the server is not started; revert to ready for test "
                                        "needs it ready for cutover or test in progress",
            "start_cutover": "the server is not started; start cutover needs it ready for cutover",
            "revert_cutover": "the server is not started; revert cutover needs it cutover in "
                              "progress",
            "finalize_cutover": "the server is not started; finalize cutover needs it cutover in "
                                "progress",
            "mark_archived": "the server is not started; mark archived needs it cutover complete "
                             "or disconnected",
            "terminate_target_instances": "snapship has launched no instance for this server "
                                          "that is still running",
        }
        for name, why in expected.items():
            arg: Any = LaunchRequest() if name in ("start_test", "start_cutover") else (
                LifecycleCommand())
            assert await reason(handle, name, arg) == why, name
        expired = LaunchRequest(not_after="2020-01-01T00:00:00+00:00")
        assert await reason(handle, "start_test", expired) == EXPIRED_MESSAGE
        assert "launch disposition must be one of" in await reason(
            handle, "update_launch_settings", LaunchSettings(launch_disposition="RUNNING"))
        # Ready for testing: cutover and finalize still refused; the state did not move.
        await handle.execute_update(SourceServerWorkflow.start_replication,
                                    StartReplicationRequest(interval_seconds=3600))
        st = await wait_for(handle, succeeded(1))
        assert st.lifecycle_state == "READY_FOR_TEST"
        assert (await reason(handle, "start_cutover", LaunchRequest())).startswith(
            "the server is ready for testing; start cutover needs it ready for cutover")
        assert (await reason(handle, "mark_ready_for_cutover", LifecycleCommand())).startswith(
            "the server is ready for testing;")
        st = await handle.query(SourceServerWorkflow.status)
        assert st.lifecycle_state == "READY_FOR_TEST" and st.launch is not None
        assert st.launch.last_test is None and not st.launch.job_in_progress
        # Disconnected: only archiving (and settings) remain; archived: everything refused.
        await handle.execute_update("disconnect", LifecycleCommand(reason="test"))
        assert (await reason(handle, "start_test", LaunchRequest())).startswith(
            "the server is disconnected;")
        assert await reason(handle, "disconnect", LifecycleCommand()) == (
            "the server is disconnected; disconnect is not possible then")
        await handle.execute_update("mark_archived", LifecycleCommand())
        await handle.result()
