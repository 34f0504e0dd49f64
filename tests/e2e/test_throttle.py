"""A global Mbit/s budget shared by the VMs shipping, measured at the far end (the bytes local
AWS receives per second), and changed while the runs are in flight."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.config import ClientConfig
from snapship.permit_messages import PermitLimits, PermitsView, coordinator_id
from tests.e2e.harness import Sandbox, runs_ok, sandbox, wait_status
from workflows.permits import PermitCoordinatorWorkflow

MIB = 1024 * 1024
DISK_MIB = 64
FIRST_MBPS = 24
SECOND_MBPS = 8
WINDOW_S = 20
SETTLE_S = 5  # "within a few seconds": the ship activity reads its share every 3 s


def budget(config: ClientConfig) -> None:
    config.replication.total_mbps = FIRST_MBPS


def far_end_mbps(sb: Sandbox, start: int, seconds: int) -> float:
    per = sb.aws.admin.stats()["put_bytes_per_second"]
    got = sum(int(per.get(str(s), 0)) for s in range(start, start + seconds))
    return got * 8 / 1_000_000 / seconds


async def until_wall(second: float) -> None:
    while time.time() < second:
        await asyncio.sleep(0.2)


async def set_mbps(sb: Sandbox, mbps: int) -> None:
    handle = sb.client.get_workflow_handle(coordinator_id(sb.config.client_id))
    view: PermitsView = await handle.query(PermitCoordinatorWorkflow.permits)
    limits = dataclasses.replace(view.limits, total_mbps=mbps)
    got: PermitLimits = await handle.execute_update(PermitCoordinatorWorkflow.set_limits, limits)
    assert got.total_mbps == mbps


@pytest.mark.slow
async def test_global_budget_holds_at_the_far_end_and_changes_mid_run(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vms = [{"name": f"bw-{i}", "disks": [{"capacity_mib": DISK_MIB}]} for i in range(2)]
    async with sandbox(tmp_path, temporal_env, vms, tune=budget) as sb:
        for i, vm in enumerate(vms):
            sb.sim.admin.write(vm["name"], 0, length=DISK_MIB * MIB, random_seed=40 + i)
        handles = [await sb.start(vm["name"]) for vm in vms]
        deadline = time.monotonic() + 180
        while len(sb.aws.admin.stats()["put_blocks_by_snapshot"]) < 2:  # both VMs shipping
            assert time.monotonic() < deadline, "the two VMs never shipped at once"
            await asyncio.sleep(0.2)
        start = int(time.time()) + SETTLE_S
        await until_wall(start + WINDOW_S + 0.5)
        first = far_end_mbps(sb, start, WINDOW_S)
        await set_mbps(sb, SECOND_MBPS)
        changed = int(time.time()) + 1
        await until_wall(changed + SETTLE_S + 10 + 0.5)
        second = far_end_mbps(sb, changed + SETTLE_S, 10)
        await set_mbps(sb, 0)  # no limit: finish quickly
        statuses = await asyncio.gather(*(wait_status(h, runs_ok(1), timeout=300) for h in handles))
        print(f"\nfar end: {first:.1f} Mbit/s at {FIRST_MBPS}, {second:.1f} at {SECOND_MBPS}")
        assert abs(first - FIRST_MBPS) <= 0.1 * FIRST_MBPS, first
        assert abs(second - SECOND_MBPS) <= 0.1 * SECOND_MBPS, second
        for vm, st in zip(vms, statuses, strict=True):
            assert sb.verify_group(vm["name"], st, st.runs[-1]) == 1
