"""Crashes mid-run: a killed worker resumes from its checkpoint; a Temporal restart is survived."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.config import ClientConfig
from snapship.temporal_server import DevServerSettings, start, stop
from tests.e2e.harness import runs_ok, sandbox, spawn_worker, wait_status

MIB = 1024 * 1024
DISK_MIB = 128
BLOCKS = DISK_MIB * MIB // EBS_BLOCK_SIZE
IN_FLIGHT = 8
CHECKPOINT_BLOCKS = 8
LATENCY_MS = 400  # with 8 in flight: about 20 blocks/s
HEARTBEAT_THROTTLE_S = 2


def slow_small_window(config: ClientConfig) -> None:
    config.replication.ebs_concurrency = IN_FLIGHT
    config.replication.checkpoint_every_blocks = CHECKPOINT_BLOCKS


async def puts(sb: object) -> int:
    stats = sb.aws.admin.stats()  # type: ignore[attr-defined]
    return int(stats.get("put_blocks", 0))


@pytest.mark.slow
async def test_sigkill_mid_shipping_resumes_from_checkpoint(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    vm = {"name": "big-01", "disks": [{"capacity_mib": DISK_MIB}]}
    async with sandbox(
        tmp_path, temporal_env, [vm], run_worker_inline=False, tune=slow_small_window
    ) as sb:
        sb.sim.admin.write("big-01", 0, length=DISK_MIB * MIB, random_seed=7)
        sb.aws.admin.set_faults(latency_ms=LATENCY_MS, operations=["PutSnapshotBlock"])
        log = tmp_path / "worker.log"
        worker = spawn_worker(sb.config, sb.sim.state_dir, log)
        try:
            handle = await sb.start("big-01")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while await puts(sb) < BLOCKS // 2:
                assert worker.poll() is None, log.read_text()[-3000:]
                assert loop.time() < deadline, "shipping never got going"
                await asyncio.sleep(0.2)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            sent_before_kill = await puts(sb)
            assert sent_before_kill < BLOCKS, "the kill came too late to test resuming"
            worker = spawn_worker(sb.config, sb.sim.state_dir, log)
            st = await wait_status(handle, runs_ok(1), timeout=240)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        run = st.runs[-1]
        assert sb.verify_group("big-01", st, run) == 1
        resent = await puts(sb) - BLOCKS
        # What a retry re-sends is bounded by one checkpoint window: the blocks in flight and
        # those written since the last heartbeat the server recorded (throttled to 2 s).
        per_heartbeat = HEARTBEAT_THROTTLE_S * 1000 // LATENCY_MS * IN_FLIGHT
        window = IN_FLIGHT + CHECKPOINT_BLOCKS + per_heartbeat
        assert 0 <= resent <= window, f"re-sent {resent} blocks, window {window}"
        assert sb.sim.admin.vm("big-01")["snapshots"] == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
async def test_temporal_server_restart_mid_run(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    server = DevServerSettings(
        data_dir=tmp_path / "temporal", port=free_port(), ui_port=free_port(), headless=True
    )
    start(server)
    try:
        vm = {"name": "app-01", "disks": [{"capacity_mib": 16}]}
        async with sandbox(
            tmp_path, temporal_env, [vm], temporal_address=server.address, tune=slow_small_window
        ) as sb:
            sb.sim.admin.write("app-01", 0, length=16 * MIB, random_seed=9)
            sb.aws.admin.set_faults(latency_ms=LATENCY_MS, operations=["PutSnapshotBlock"])
            handle = await sb.start("app-01")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while await puts(sb) < 4:
                assert loop.time() < deadline
                await asyncio.sleep(0.2)
            stop(server)
            await asyncio.sleep(3)
            start(server)
            st = await wait_status(handle, runs_ok(1), timeout=180)
            assert sb.verify_group("app-01", st, st.runs[-1]) == 1
            assert sb.sim.admin.vm("app-01")["snapshots"] == []
    finally:
        stop(server)
