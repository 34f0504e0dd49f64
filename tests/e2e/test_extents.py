"""Changed-area answers are paged: a disk with more extents than one answer holds must replicate
completely, on the first sync ("*") and on incremental runs.

The guest writes a little data into every other 64 KiB grain, so CBT reports one separate extent
per written grain. With vCenter's default cap (2,000 extents per QueryChangedDiskAreas answer) a
~320 MiB disk needs two answers; with the cap lowered in the scenario, paging happens on small
disks and across runs of contiguous grains that straddle page ends. Each group is rebuilt from
EBS and compared byte for byte; blocks_changed must equal the distinct 512 KiB blocks written.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import snapship.vsphere.cbt as cbt
from snapship.blocks import EBS_BLOCK_SIZE
from snapship.messages import ReplicationCommand, RunRecord, SourceServerStatus
from tests.e2e.harness import Sandbox, runs_ok, sandbox, wait_status
from workflows.source_server import SourceServerWorkflow

KIB = 1024
MIB = 1024 * KIB
GRAIN = 64 * KIB
VM = "files-01"
DEFAULT_CAP = 2000


@dataclass
class ScanProbe:
    """Records every changed-area scan the worker makes: (deviceKey, answers, extents)."""

    scans: list[tuple[int, int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = cbt.scan_changed_areas

        def probe(*args: Any, **kwargs: Any) -> cbt.ChangedAreaScan:
            scan = real(*args, **kwargs)
            device_key = kwargs.get("device_key", args[3] if len(args) > 3 else -1)
            with self.lock:
                self.scans.append((int(device_key), scan.calls, len(scan.extents)))
            return scan

        monkeypatch.setattr(cbt, "scan_changed_areas", probe)

    def take(self) -> dict[int, tuple[int, int]]:
        """deviceKey -> (answers, merged extents) of the scans since the last take."""
        with self.lock:
            out = {k: (calls, n) for k, calls, n in self.scans}
            self.scans.clear()
        return out


class Guest:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.seed = 0

    def write_grains(self, disk: int, grains: Iterable[int], length: int = 700) -> set[int]:
        """A short write inside each grain (at a varying offset); returns the blocks touched."""
        touched: set[int] = set()
        for g in grains:
            self.seed += 1
            off = g * GRAIN + (g * 4099) % (GRAIN - length)
            self.sb.sim.admin.write(VM, off, length=length, random_seed=self.seed, disk=disk)
            touched.add(off // EBS_BLOCK_SIZE)
        return touched

    def write_at(self, disk: int, off: int, length: int) -> set[int]:
        self.seed += 1
        self.sb.sim.admin.write(VM, off, length=length, random_seed=self.seed, disk=disk)
        return set(range(off // EBS_BLOCK_SIZE, (off + length - 1) // EBS_BLOCK_SIZE + 1))

    def write_run(self, disk: int, first_grain: int, grains: int) -> set[int]:
        """One contiguous write over whole grains: a single multi-grain extent."""
        return self.write_at(disk, first_grain * GRAIN, grains * GRAIN)


def last_ok(st: SourceServerStatus) -> RunRecord:
    return [r for r in st.runs if r.outcome == "SUCCEEDED"][-1]


async def test_default_cap_exceeded_on_first_and_incremental_runs(
    tmp_path: Path, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    capacity = 320 * MIB
    grains = capacity // GRAIN  # 5120
    probe = ScanProbe()
    probe.install(monkeypatch)
    vms = [{"name": VM, "disks": [{"capacity_mib": 320}]}]
    async with sandbox(tmp_path, temporal_env, vms) as sb:
        guest = Guest(sb)
        key = int(sb.sim.admin.vm(VM)["disks"][0]["key"])
        # Every even grain: 2,560 separate extents on the first sync.
        first = list(range(0, grains, 2))
        touched = guest.write_grains(0, first)
        assert len(first) > DEFAULT_CAP
        handle = await sb.start(VM)
        st = await wait_status(handle, runs_ok(1), timeout=90)
        run = last_ok(st)
        assert run.full_sync_disks == 1
        assert run.blocks_changed == len(touched) == capacity // EBS_BLOCK_SIZE
        assert sb.verify_group(VM, st, run) == 1
        # CBT really answered in pages, and every extent of every page was kept.
        calls, extents = probe.take()[key]
        assert extents == len(first)
        assert calls >= math.ceil(len(first) / DEFAULT_CAP)

        # Odd grains over the first 2,100 grain pairs: 2,100 extents, incremental.
        second = list(range(1, 2 * 2100, 2))
        touched = guest.write_grains(0, second, length=GRAIN - 2000)
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await wait_status(handle, runs_ok(2), timeout=90)
        run = last_ok(st)
        assert run.full_sync_disks == 0
        assert run.blocks_changed == len(touched) == math.ceil(2 * 2100 * GRAIN / EBS_BLOCK_SIZE)
        assert run.blocks_written == run.blocks_changed
        assert sb.verify_group(VM, st, run) == 1
        calls, extents = probe.take()[key]
        assert extents == len(second)
        assert calls >= math.ceil(len(second) / DEFAULT_CAP)


async def test_low_cap_pages_across_disks_and_contiguous_runs(
    tmp_path: Path, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = 7
    probe = ScanProbe()
    probe.install(monkeypatch)
    # Sizes that are not multiples of 512 KiB; the second disk's last grain is partial.
    disks = [{"capacity_mib": 24}, {"capacity_kb": 9 * 1024 + 20}]
    vms = [{"name": VM, "disks": disks}]
    async with sandbox(tmp_path, temporal_env, vms, max_changed_extents=cap) as sb:
        guest = Guest(sb)
        keys = [int(d["key"]) for d in sb.sim.admin.vm(VM)["disks"]]
        cap1 = (9 * 1024 + 20) * KIB
        touched = [
            guest.write_grains(0, range(0, 24 * MIB // GRAIN, 3))
            | guest.write_run(0, 100, 9),
            guest.write_grains(1, [0, 2, 5, 40, 77, 100, 141])
            | guest.write_run(1, 20, 13)
            | guest.write_at(1, cap1 - 10 * KIB, 10 * KIB),
        ]
        handle = await sb.start(VM)
        st = await wait_status(handle, runs_ok(1), timeout=60)
        run = last_ok(st)
        assert run.full_sync_disks == 2
        assert run.blocks_changed == sum(len(t) for t in touched)
        assert sb.verify_group(VM, st, run) == 2
        scans = probe.take()
        for key in keys:
            calls, extents = scans[key]
            assert calls >= math.ceil(extents / cap) and calls > 1, (key, calls, extents)

        # Incremental: new scattered grains and a run spanning several 512 KiB blocks.
        touched = [
            guest.write_grains(0, range(1, 24 * MIB // GRAIN, 5)) | guest.write_run(0, 250, 30),
            guest.write_grains(1, [1, 3, 99]) | guest.write_at(1, cap1 - 1, 1),
        ]
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
        st = await wait_status(handle, runs_ok(2), timeout=60)
        run = last_ok(st)
        assert run.full_sync_disks == 0
        assert run.blocks_changed == sum(len(t) for t in touched)
        assert run.blocks_written == run.blocks_changed
        assert sb.verify_group(VM, st, run) == 2
        scans = probe.take()
        assert scans[keys[0]][0] > 1
