"""An activity failing with a huge, multi-line error: Temporal records the failure (no "Failure
exceeds size limit"), small and one line; the status shows it as one line; the run goes on.

Cut to one line and stripped of its cause by the worker's fault boundary
(activities/fault_boundary.py); this test holds it to that on the whole pipeline."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.e2e.harness import runs_ok, sandbox, wait_status

MIB = 1024 * 1024
HUGE = ("vCenter says: " + "x" * 1000 + "\n") * 300  # ~300 KB over 300 lines
MAX_RECORDED = 2000
"""Bytes a recorded failure may carry (message, stack trace and the codec-encoded attributes
that hold them when the payload codec is on), far below Temporal's cap."""


async def test_very_long_error_is_recorded_and_shown_as_one_line(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "long-01", "disks": [{"capacity_mib": 8}], "cbt": True}
    async with sandbox(tmp_path, temporal_env, [vm]) as sb:
        sb.sim.admin.write("long-01", 0, length=MIB, random_seed=4)
        # Three failures: Temporal keeps the latest as the pending attempt's last failure while
        # it waits to retry (retried attempts' failures are not history events).
        sb.sim.admin.fail_tasks("CreateSnapshot", count=3, fault="SystemError", message=HUGE)
        handle = await sb.start("long-01")
        retrying = await wait_status(handle, lambda s: s.retry is not None, timeout=60)
        failures = []
        while not failures:
            desc = await handle.describe()
            failures = [
                a.last_failure
                for a in desc.raw_description.pending_activities
                if a.activity_type.name == "snapship.create_snapshot"
                and a.HasField("last_failure")
            ]
        st = await wait_status(handle, runs_ok(1), timeout=120)
        assert sb.verify_group("long-01", st, st.runs[-1]) == 1
    assert retrying.retry is not None
    shown = retrying.retry.message
    assert "\n" not in shown and "vCenter says" in shown and len(shown) <= 500, shown[:600]
    f = failures[0]
    size = len(f.message) + len(f.stack_trace) + len(f.encoded_attributes.data)
    assert "\n" not in f.message and size <= MAX_RECORDED, size
    assert not f.HasField("cause")
    assert st.runs[-1].outcome == "SUCCEEDED"
