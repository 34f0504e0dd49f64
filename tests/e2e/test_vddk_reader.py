"""VDDK reader processes end to end: a killed reader resumes, a stalled read times out.

Each disk being shipped has its own reader process (snapship.vddk.server), started by the worker
with LD_LIBRARY_PATH; these tests find them through /proc (their argv names the disk, their
environment the sandbox's state directory) and break them on purpose.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from sandbox.vcsim.vddk_registry import StubRegistry
from snapship.blocks import EBS_BLOCK_SIZE
from snapship.config import ClientConfig
from tests.e2e.harness import runs_ok, sandbox, wait_status

MIB = 1024 * 1024
DISK_MIB = 128
BLOCKS = DISK_MIB * MIB // EBS_BLOCK_SIZE
IN_FLIGHT = 8
CHECKPOINT_BLOCKS = 8
LATENCY_MS = 400
HEARTBEAT_THROTTLE_S = 2


def readers(state_dir: Path) -> dict[int, str]:
    """{pid: label} of the live VDDK reader processes serving this sandbox."""
    found: dict[int, str] = {}
    want = f"SNAPSHIP_STUB_VDDK_STATE={state_dir}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"snapship.vddk.server" not in argv:
                continue
            if want not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        found[int(entry)] = argv[argv.index(b"--label") + 1].decode()
    return found


async def last_ship_failure(client: Client, handle: WorkflowHandle) -> str:
    """The message of the ship activity's last failed attempt (decoded: payloads are sealed)."""
    desc = await handle.describe()
    for act in desc.raw_description.pending_activities:
        if act.activity_type.name == "snapship.ship" and act.HasField("last_failure"):
            err = await client.data_converter.decode_failure(act.last_failure)
            return str(getattr(err, "message", err))
    return ""


def slow_window(config: ClientConfig) -> None:
    config.replication.ebs_concurrency = IN_FLIGHT
    config.replication.checkpoint_every_blocks = CHECKPOINT_BLOCKS


@pytest.mark.slow
async def test_sigkill_of_a_reader_resumes_that_vm_only(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vms = [{"name": n, "disks": [{"capacity_mib": DISK_MIB}]} for n in ("vm-kill", "vm-calm")]
    async with sandbox(tmp_path, temporal_env, vms, shipping_slots=2, tune=slow_window) as sb:
        for seed, name in enumerate(("vm-kill", "vm-calm")):
            sb.sim.admin.write(name, 0, length=DISK_MIB * MIB, random_seed=11 + seed)
        sb.aws.admin.set_faults(latency_ms=LATENCY_MS, operations=["PutSnapshotBlock"])
        state = sb.sim.state_dir
        kill, calm = await sb.start("vm-kill"), await sb.start("vm-calm")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        # both VMs are shipping, each through its own reader, and a third of the data is out
        while True:
            live = readers(state)
            stats = sb.aws.admin.stats()
            if len(live) == 2 and int(stats.get("put_blocks", 0)) >= 2 * BLOCKS // 3:
                break
            assert loop.time() < deadline, f"shipping never got going: {live} {stats}"
            await asyncio.sleep(0.1)
        victim = next(pid for pid, label in live.items() if "vm-kill/" in label)
        bystander = next(pid for pid, label in live.items() if "vm-calm/" in label)
        os.kill(victim, signal.SIGKILL)
        killed_at = int(sb.aws.admin.stats().get("put_blocks", 0))
        assert killed_at < 2 * BLOCKS, "the kill came too late to test resuming"
        reason = ""
        while not reason:
            reason = await last_ship_failure(sb.client, kill)
            assert loop.time() < deadline, "the killed reader's attempt never failed"
            await asyncio.sleep(0.1)
        assert reason.startswith("VDDK reader process ") and "was killed by SIGKILL" in reason
        assert "\n" not in reason
        # the other VM's reader keeps reading (same process) while the first one retries
        assert bystander in readers(state)
        st_kill = await wait_status(kill, runs_ok(1), timeout=300)
        st_calm = await wait_status(calm, runs_ok(1), timeout=300)
        assert await last_ship_failure(sb.client, calm) == ""
        assert sb.verify_group("vm-kill", st_kill, st_kill.runs[-1]) == 1
        assert sb.verify_group("vm-calm", st_calm, st_calm.runs[-1]) == 1
        resent = int(sb.aws.admin.stats().get("put_blocks", 0)) - 2 * BLOCKS
        # resumed, not restarted: what was re-sent is bounded by one checkpoint window
        per_heartbeat = HEARTBEAT_THROTTLE_S * 1000 // LATENCY_MS * IN_FLIGHT
        window = IN_FLIGHT + CHECKPOINT_BLOCKS + per_heartbeat
        assert 0 <= resent <= window, f"re-sent {resent} blocks, window {window}"
        for name in ("vm-kill", "vm-calm"):
            assert sb.sim.admin.vm(name)["snapshots"] == []
        assert readers(state) == {}


def short_read_timeout(config: ClientConfig) -> None:
    config.replication.vddk_nfc_read_timeout_ms = 2000


@pytest.mark.slow
async def test_stalled_read_times_out_and_the_snapshot_is_removed(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "vm-stall", "disks": [{"capacity_mib": 16}]}
    async with sandbox(tmp_path, temporal_env, [vm], tune=short_read_timeout) as sb:
        sb.sim.admin.write("vm-stall", 0, length=16 * MIB, random_seed=5)
        registry = StubRegistry(sb.sim.state_dir)
        registry.set_faults(read_stall=1)  # the host stops answering reads
        loop = asyncio.get_running_loop()
        handle = await sb.start("vm-stall")
        started = time.monotonic()
        deadline = loop.time() + 120
        reason = ""
        while not reason:
            reason = await last_ship_failure(sb.client, handle)
            assert loop.time() < deadline, "the stalled read never failed"
            await asyncio.sleep(0.1)
        failed_after = time.monotonic() - started
        # The fault boundary's line: VDDK's code and text, and the call that failed.
        assert reason == (
            "VDDK error 14011: The network connection to the host was lost in VixDiskLib_ReadAsync"
        )
        assert failed_after >= 2.0, failed_after  # not before the configured read timeout
        registry.set_faults()  # the host answers again: the retried attempt completes
        st = await wait_status(handle, runs_ok(1), timeout=180)
        assert sb.verify_group("vm-stall", st, st.runs[-1]) == 1
        assert sb.sim.admin.vm("vm-stall")["snapshots"] == []
        assert readers(sb.sim.state_dir) == {}
