"""Faults a person must see in seconds, against the whole pipeline on the sandbox.

- A vCenter whose QueryChangedDiskAreas answers MethodNotFound: permanent, so the run fails at
  once (no 20-minute retry budget), snapship's VMware snapshot is removed, the server is STALLED
  with a one-line reason naming the method.
- A VDDK that cannot connect: transient with a short budget, so `servers` shows the retry (attempt,
  reason, next try) within seconds, and after the budget the server is STALLED with that reason.

Every text these faults produce for a person (last_error, run reasons, the retry line, each
console line of `servers` and `servers show`) is checked to be one line without a Python repr.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from sandbox.vcsim.vddk_registry import StubRegistry
from snapship.cli import app
from snapship.messages import ReplicationCommand
from tests.e2e.harness import (
    Sandbox,
    assert_for_people,
    person_texts,
    runs_ok,
    sandbox,
    wait_status,
)
from workflows.source_server import SourceServerWorkflow

MIB = 1024 * 1024
DISKS = [{"capacity_mib": 8}]
FAIL_FAST_S = 60
RETRY_VISIBLE_S = 30

async def console(sb: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """`snapship <argv> --data-dir ...` as a user runs it; its output lines."""
    code = await asyncio.to_thread(app.main, [*argv, "--data-dir", sb.config.data_dir])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.splitlines()


def error_line(lines: list[str], vm: str) -> str:
    rows = [ln for ln in lines if ln.startswith(vm + " ")]
    assert len(rows) == 1, lines
    return rows[0]


async def test_vcenter_without_query_changed_disk_areas_fails_fast(
    tmp_path: Path, temporal_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    vm = "qcda-missing-01"
    async with sandbox(tmp_path, temporal_env, [{"name": vm, "disks": DISKS}]) as sb:
        sb.sim.admin.write(vm, 0, length=2 * MIB, random_seed=5, disk=0)
        sb.sim.admin.missing_methods("QueryChangedDiskAreas")
        started = time.monotonic()
        handle = await sb.start(vm)
        st = await wait_status(
            handle,
            lambda s: s.data_replication_state == "STALLED" and bool(s.runs[-1].finished_at),
            timeout=FAIL_FAST_S,
        )
        elapsed = time.monotonic() - started
        assert elapsed < FAIL_FAST_S
        run = st.runs[-1]
        assert run.outcome == "FAILED"
        assert "QueryChangedDiskAreas" in run.reason and "MethodNotFound" in run.reason
        assert st.last_error == f"{run.run_id}: {run.reason}"
        assert st.retry is None
        # snapship's VMware snapshot is gone, and nothing of the run is left in EBS
        assert sb.sim.admin.vm(vm)["snapshots"] == []
        assert sb.aws.admin.snapshots() == []

        table = await console(sb, capsys, "servers", "--all", "--name", vm)
        row = error_line(table, vm)
        assert "STALLED" in row and "QueryChangedDiskAreas" in row
        show = await console(sb, capsys, "servers", "show", vm)
        assert any("Last error:" in ln and "QueryChangedDiskAreas" in ln for ln in show)
        assert_for_people(person_texts(st) + table + show)


async def test_cbt_that_never_tracks_fails_fast(
    tmp_path: Path, temporal_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    vm = "cbt-stuck-01"
    async with sandbox(tmp_path, temporal_env, [{"name": vm, "disks": DISKS}]) as sb:
        assert sb.sim.admin.vm(vm)["power_state"] == "poweredOn"  # CBT needs a stun to start
        sb.sim.admin.set_flags(vm, cbt_stuck=True)
        started = time.monotonic()
        handle = await sb.start(vm)
        st = await wait_status(
            handle,
            lambda s: s.data_replication_state == "STALLED" and bool(s.runs[-1].finished_at),
            timeout=FAIL_FAST_S,
        )
        assert time.monotonic() - started < FAIL_FAST_S
        run = st.runs[-1]
        assert run.outcome == "FAILED"
        assert "Changed Block Tracking" in run.reason and "no changeId" in run.reason
        assert sb.sim.admin.vm(vm)["snapshots"] == []  # the activation snapshot is removed
        table = await console(sb, capsys, "servers", "--all", "--name", vm)
        assert "Changed Block Tracking" in error_line(table, vm)
        assert_for_people(person_texts(st) + table)


async def test_vddk_refusing_to_connect_shows_the_retry_then_stalls(
    tmp_path: Path, temporal_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    vm = "vddk-down-01"
    async with sandbox(tmp_path, temporal_env, [{"name": vm, "disks": DISKS}]) as sb:
        sb.sim.admin.write(vm, 0, length=2 * MIB, random_seed=9, disk=0)
        vddk = StubRegistry(sb.sim.state_dir)
        vddk.set_faults(connect_error=14008)  # VIX_E_HOST_SERVER_NOT_FOUND
        started = time.monotonic()
        handle = await sb.start(vm)

        retrying = await wait_status(handle, lambda s: s.retry is not None, RETRY_VISIBLE_S)
        assert retrying.retry is not None
        assert retrying.retry.activity == "snapship.ship"
        assert retrying.retry.message.startswith("VDDK error 14008: Cannot connect to the host")
        table = await console(sb, capsys, "servers", "--all", "--name", vm)
        row = error_line(table, vm)
        assert re.search(
            r"retrying \(attempt [2-4] of 4\): VDDK error 14008: Cannot connect to the host .*"
            r"; (next try in \d+ s|trying now)$",
            row,
        ), row
        assert time.monotonic() - started < RETRY_VISIBLE_S
        show = await console(sb, capsys, "servers", "show", vm)
        assert any(ln.strip(" |").startswith("Now: retrying (attempt") for ln in show), show
        # The Web UI shows the workflow's current details: the retry is there too.
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        details = meta.current_details.split("\n\n")
        assert any(
            re.fullmatch(r"Now: retrying \(attempt [2-4] of 4\): VDDK error 14008: .*"
                         r"; next try at \d\d:\d\d:\d\dZ", d)
            for d in details
        ), details

        stalled = await wait_status(
            handle,
            lambda s: s.data_replication_state == "STALLED" and bool(s.runs[-1].finished_at),
            timeout=FAIL_FAST_S,
        )
        assert time.monotonic() - started < FAIL_FAST_S + RETRY_VISIBLE_S
        run = stalled.runs[-1]
        assert run.outcome == "FAILED"
        assert "VDDK error 14008: Cannot connect to the host" in run.reason
        assert "gave up after 4 attempts" in run.reason
        assert stalled.retry is None
        assert sb.sim.admin.vm(vm)["snapshots"] == []
        stalled_table = await console(sb, capsys, "servers", "--all", "--name", vm)
        row = error_line(stalled_table, vm)
        assert "STALLED" in row and "VDDK error 14008" in row

        # Once VDDK connects again, the next run ships and the replica matches the VM.
        vddk.set_faults()
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        ok = await wait_status(handle, runs_ok(1), timeout=60)
        ok_run = [r for r in ok.runs if r.outcome == "SUCCEEDED"][-1]
        assert sb.verify_group(vm, ok, ok_run) == 1
        assert ok.last_error == "" and ok.retry is None
        assert_for_people(
            person_texts(retrying) + person_texts(stalled) + table + show + stalled_table + details
        )
