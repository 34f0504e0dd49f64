"""Disks in parallel vs one after another, in the same run, with latency on every EBS call.

A 4-disk VM on the sandbox (simulator + stub VDDK + local AWS) is shipped twice from the same
VMware snapshot content, by the Shipper the ship activity runs: once with all its disks at once,
once one disk after another, each as a first sync into new EBS snapshots. Local AWS adds
`--latency-ms` to every EBS call. Prints and writes bench/results/parallel_disks.json with both
wall times and their ratio, for the configured window (`ebs_concurrency` calls in flight per
VM, shared by the disks shipping at once) and, with --windows, for other windows too.

Each window is measured twice: with the EBS latency alone (the stub VDDK reads as fast as the
machine can), and with every disk's reads also held to `--nbd-mib-per-s` (the stub's
`read_mib_per_s`, one NBD connection per disk; peers measured 75-150 MB/s per disk in the
field, 72 MiB/s being the low end). The shared window makes the EBS latency no reason to ship
disks at once: one disk alone gets the whole window. What parallel disks win in the field is
the per-disk read rate, and the second row measures that.

Usage: .venv/bin/python bench/bench_parallel_disks.py [--disk-mib 256] [--latency-ms 20]
       [--nbd-mib-per-s 72]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from sandbox.vcsim.vddk_registry import StubRegistry  # noqa: E402
from snapship.search_attributes import dev_server_flags  # noqa: E402
from tests.e2e.harness import sandbox  # noqa: E402
from tests.e2e.shipping_run import Run  # noqa: E402

MIB = 1024 * 1024
DISKS = 4


def ship_once(sb: Any, vm: str, run_id: str, disks_in_parallel: int) -> float:
    run = Run(sb, vm, run_id)
    try:
        start = time.perf_counter()
        results = run.shipper(disks_in_parallel=disks_in_parallel).ship(run.ship_input)
        seconds = time.perf_counter() - start
        assert len(results) == DISKS
        return seconds
    finally:
        run.remove_snapshot()


async def bench(
    disk_mib: int, latency_ms: float, windows: list[int], nbd_mib_per_s: int, work: Path
) -> dict[str, Any]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    vm = {"name": "multi", "disks": [{"capacity_mib": disk_mib} for _ in range(DISKS)]}
    out: dict[str, Any] = {
        "disks": DISKS,
        "disk_mib": disk_mib,
        "latency_ms_per_ebs_call": latency_ms,
        "nbd_mib_per_s_per_disk": nbd_mib_per_s,
        "load_average_at_start": os.getloadavg(),
        "windows": [],
    }
    try:
        async with sandbox(work, env, [vm], run_worker_inline=False) as sb:
            for disk in range(DISKS):
                for off in range(0, disk_mib * MIB, 32 * MIB):
                    length = min(32 * MIB, disk_mib * MIB - off)
                    seed = off + disk
                    sb.sim.admin.write("multi", off, length=length, random_seed=seed, disk=disk)
            sb.aws.admin.set_faults(latency_ms=latency_ms)
            # Warm up (imports, clients, VDDK load) so neither mode pays for it; then alternate
            # which mode goes first.
            ship_once(sb, "multi", "warm", DISKS)
            registry = StubRegistry(sb.sim.state_dir)
            rows = [(w, rate) for w in windows for rate in (0, nbd_mib_per_s)]
            for n, (window, rate) in enumerate(rows):
                sb.config.replication.ebs_concurrency = window
                registry.set_faults(read_mib_per_s=rate)  # read at each disk's open
                if n % 2:
                    sequential = ship_once(sb, "multi", f"s{n}", 1)
                    parallel = ship_once(sb, "multi", f"p{n}", DISKS)
                else:
                    parallel = ship_once(sb, "multi", f"p{n}", DISKS)
                    sequential = ship_once(sb, "multi", f"s{n}", 1)
                row = {
                    "calls_in_flight_per_vm": window,
                    "nbd_mib_per_s_per_disk": rate or "unlimited",
                    "parallel_seconds": round(parallel, 2),
                    "sequential_seconds": round(sequential, 2),
                    "parallel_over_sequential": round(parallel / sequential, 3),
                    "parallel_mb_per_s": round(DISKS * disk_mib * MIB / 1e6 / parallel, 1),
                }
                print(json.dumps(row), flush=True)
                out["windows"].append(row)
            registry.set_faults()
    finally:
        await env.shutdown()
    out["load_average_at_end"] = os.getloadavg()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--disk-mib", type=int, default=256, help="per disk (at 64, per-disk start-up dominates)"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[32], help="calls in flight per VM"
    )
    parser.add_argument(
        "--nbd-mib-per-s", type=int, default=72, help="each disk's read rate in the second row"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapship-bench-") as tmp:
        results = asyncio.run(
            bench(args.disk_mib, args.latency_ms, args.windows, args.nbd_mib_per_s, Path(tmp))
        )
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "parallel_disks.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
