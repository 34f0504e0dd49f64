"""Chaos: two workers, three VMs replicating every few seconds with guest writes, and the workers
SIGKILLed 20+ times (fixed seed) inside every activity type, right after CompleteSnapshot and
during snapshot removal. Without any command from outside every VM keeps producing groups;
the groups are byte-identical to the VMware snapshots; `snapship replicate stop --all` leaves no
snapshot on any VM and nothing pending in EBS. Prints recovery time per kill (kill -> every VM
completed a group after it) and the blocks re-sent per snapshot."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from snapship.config import ClientConfig
from snapship.ebs.completion import TAG_COMPLETION, CompletionMark
from snapship.ebs.groups import describe_group
from snapship.messages import RunRecord, SourceServerStatus
from tests.e2e.harness import ROOT, Sandbox, sandbox
from tests.e2e.kills import WorkerProcess, pending
from workflows.source_server import SourceServerWorkflow

SEED = 1616
KILLS = int(os.environ.get("SNAPSHIP_CHAOS_KILLS", "20"))
VMS = ["chaos-01", "chaos-02", "chaos-03"]
MIB = 1024 * 1024
DISK_MIB = 16
IN_FLIGHT = 4
CHECKPOINT_BLOCKS = 4
PUT_LATENCY_MS = 150
HEARTBEAT_THROTTLE_S = 2
RECOVERY_BOUND_S = 180.0
"""Last kill -> every VM completed a newer group, with no command from outside. Kills come every
few seconds, so an early kill's recovery also waits out the kills after it: the per-kill figures
are printed (max/median), the bound holds after the last one. On the shared 2-core machine a
respawned worker needs 10-25 s to start, plus one heartbeat timeout and the retry backoff."""
RUN_CHAOS = os.environ.get("SNAPSHIP_CHAOS") == "1"
"""6-8 minutes on the shared machine: over the suite's time budget, so opt-in."""
SEALING = "after CompleteSnapshot"
TARGETS = [
    "snapship.preflight",
    "snapship.ensure_cbt",
    "snapship.create_snapshot",
    "snapship.ship",
    "snapship.location_check",
    "snapship.complete_group",
    "snapship.remove_snapshot",
    "snapship.apply_retention",
    SEALING,
]


def tune(config: ClientConfig) -> None:
    config.replication.ebs_concurrency = IN_FLIGHT
    config.replication.checkpoint_every_blocks = CHECKPOINT_BLOCKS


def far_end_slowness(sb: Sandbox) -> None:
    """Every step takes long enough for a kill to land inside it (none of it changes results)."""
    vc, aws = sb.sim.admin, sb.aws.admin
    vc.delay_calls("HasPrivilegeOnEntities", 1.0)  # preflight
    vc.delay_calls("RetrievePropertiesEx", 0.15)  # every vCenter read, location_check included
    vc.delay_tasks("CreateSnapshot", 1.0)
    vc.delay_tasks("RemoveSnapshot", 1.5)
    aws.set_faults(
        latency_ms=PUT_LATENCY_MS,
        operations=["PutSnapshotBlock"],
        respond_after_seconds={"CompleteSnapshot": 1.5},
        slow_actions={"ec2:DescribeSnapshots": 0.3},
        complete_delay_seconds=1.0,
    )


@dataclass
class Groups:
    """Every successful run seen, by VM (run records roll over; this keeps all of them)."""

    done: dict[str, dict[str, RunRecord]]
    last: dict[str, SourceServerStatus]

    def finished_after(self, vm: str, t: float) -> float | None:
        times = [
            datetime.fromisoformat(r.finished_at).timestamp()
            for r in self.done[vm].values()
        ]
        later = [x for x in times if x > t]
        return min(later) if later else None


async def watch(handles: dict[str, WorkflowHandle], groups: Groups, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for vm, h in handles.items():
            try:
                st: SourceServerStatus = await h.query(SourceServerWorkflow.status)
            except Exception:
                continue
            groups.last[vm] = st
            for r in st.runs:
                if r.outcome == "SUCCEEDED" and r.finished_at:
                    groups.done[vm].setdefault(r.run_id, r)
        await asyncio.sleep(0.5)


async def guest_writes(sb: Sandbox, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        vm = rng.choice(VMS)
        offset = rng.randrange(0, DISK_MIB - 1) * MIB
        await asyncio.to_thread(
            sb.sim.admin.write, vm, offset, length=MIB, random_seed=rng.randrange(1 << 30)
        )
        await asyncio.sleep(1.0)


async def find_target(
    handles: dict[str, WorkflowHandle],
    workers: list[WorkerProcess],
    target: str,
    sb: Sandbox,
    timeout: float,
) -> WorkerProcess | None:
    """The worker running `target` right now (for SEALING: one whose ship just sent
    CompleteSnapshot), or None if it did not come up in time."""
    deadline = time.monotonic() + timeout
    completes = sb.aws.admin.stats()["requests"].get("CompleteSnapshot", 0)
    while time.monotonic() < deadline:
        by_identity = {w.identity: w for w in workers if w.alive()}
        activity = "snapship.ship" if target == SEALING else target
        if target == SEALING:
            now = sb.aws.admin.stats()["requests"].get("CompleteSnapshot", 0)
            if now <= completes:
                await asyncio.sleep(0.05)
                continue
        for h in handles.values():
            p = (await pending(h)).get(activity)
            if p is not None and p.started and p.worker in by_identity:
                return by_identity[p.worker]
        if target == SEALING:
            completes = sb.aws.admin.stats()["requests"].get("CompleteSnapshot", 0)
        await asyncio.sleep(0.05)
    return None


async def describe(vm: str, handle: WorkflowHandle) -> str:
    st: SourceServerStatus = await handle.query(SourceServerWorkflow.status)
    runs = [(r.run_id, r.outcome, r.reason[:80]) for r in st.runs[-3:]]
    return (
        f"{vm}: {st.data_replication_state} {st.last_error!r} runs {runs} "
        f"pending {sorted((await pending(handle)).values(), key=str)}"
    )


async def stop_all(sb: Sandbox) -> tuple[int, str]:
    """`snapship replicate stop --all`, the console command, as its own process."""
    code = (
        "import sys; from snapship.cli.app import main; "
        f"sys.exit(main(['replicate', 'stop', '--all', '--data-dir', {sb.config.data_dir!r}]))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.skipif(not RUN_CHAOS, reason="chaos test: set SNAPSHIP_CHAOS=1 (6-8 min)")
async def test_chaos_kills_recover_without_commands(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    rng = random.Random(SEED)
    vms = [{"name": n, "disks": [{"capacity_mib": DISK_MIB}], "cbt": True} for n in VMS]
    async with sandbox(
        tmp_path, temporal_env, vms, run_worker_inline=False, tune=tune
    ) as sb:
        for i, name in enumerate(VMS):
            sb.sim.admin.write(name, 0, length=DISK_MIB * MIB, random_seed=100 + i)
        far_end_slowness(sb)
        workers = [
            WorkerProcess(sb.config, sb.sim.state_dir, tmp_path / f"worker-{i}.log")
            for i in range(2)
        ]
        for w in workers:
            w.start()
        groups = Groups({vm: {} for vm in VMS}, {})
        stop = asyncio.Event()
        handles = {vm: await sb.start(vm, interval=5) for vm in VMS}
        background = [
            asyncio.create_task(watch(handles, groups, stop)),
            asyncio.create_task(guest_writes(sb, rng, stop)),
        ]
        plan = (TARGETS * 3)[:KILLS]
        rng.shuffle(plan)
        kills: list[tuple[float, str]] = []
        try:
            for target in plan:
                victim = await find_target(handles, workers, target, sb, timeout=40)
                if victim is None:
                    victim = rng.choice([w for w in workers if w.alive()])
                    target = f"(missed {target})"
                kills.append((time.time(), target))
                victim.restart_after_kill()
                await asyncio.sleep(rng.uniform(0.5, 2.5))
            last_kill = kills[-1][0]
            deadline = time.monotonic() + RECOVERY_BOUND_S
            while any(groups.finished_after(vm, last_kill) is None for vm in VMS):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        "a VM produced no group after the last kill: "
                        + "; ".join([await describe(vm, handles[vm]) for vm in VMS])
                    )
                await asyncio.sleep(0.5)
            code, out = await stop_all(sb)
        finally:
            stop.set()
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            left_on_vms = {vm: sb.sim.admin.vm(vm)["snapshots"] for vm in VMS}
            for w in workers:
                w.stop()

        recovery = []
        for at, _target in kills:
            per_vm = [groups.finished_after(vm, at) for vm in VMS]
            assert all(t is not None for t in per_vm)
            recovery.append(max(t for t in per_vm if t is not None) - at)
        hit = sorted({t for _a, t in kills})
        print(f"\nchaos: {len(kills)} kills at {hit}")
        print(
            f"recovery (kill -> every VM completed a newer group): max {max(recovery):.1f}s, "
            f"median {statistics.median(recovery):.1f}s"
        )
        assert len(kills) >= 20
        assert set(TARGETS) <= set(hit), f"kill points never reached: {set(TARGETS) - set(hit)}"

        # stop --all: says so only after checking, and it is true.
        print(out.strip())
        assert code == 0, out
        assert out.count("checked: no snapshot of snapship remains on the VM") == len(VMS), out
        assert left_on_vms == {vm: [] for vm in VMS}

        # Nothing of ours pending in EBS; every group still kept is byte-identical.
        clients = sb.aws_clients()
        ours = clients.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "tag-key", "Values": ["snapship:group-id"]}]
        )["Snapshots"]
        assert [s["SnapshotId"] for s in ours if s["State"] != "completed"] == []
        puts = sb.aws.admin.stats()["put_blocks_by_snapshot"]
        resent: list[int] = []
        compared = 0
        for vm in VMS:
            for run in groups.done[vm].values():
                group = describe_group(clients.ec2, run.group_id)
                if group is None:
                    continue  # retention removed it
                compared += sb.verify_group(vm, groups.last[vm], run)
                for snap in ours:
                    if snap["SnapshotId"] not in group.snapshot_ids:
                        continue
                    tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
                    mark = CompletionMark.from_tag(tags.get(TAG_COMPLETION, ""))
                    assert mark is not None
                    resent.append(puts.get(snap["SnapshotId"], 0) - mark.changed_blocks)
        window = (
            IN_FLIGHT + CHECKPOINT_BLOCKS
            + HEARTBEAT_THROTTLE_S * 1000 // PUT_LATENCY_MS * IN_FLIGHT
        )
        print(
            f"groups compared byte for byte: {compared} disks; blocks re-sent per snapshot: "
            f"max {max(resent)}, total {sum(resent)} (README bound {window})"
        )
        assert compared >= len(VMS)
        assert min(resent) >= 0 and max(resent) <= window
