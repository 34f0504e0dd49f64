"""Initial sync through the real worker process: MB/s and CPU seconds per GiB, worker + readers.

The worker runs as its own process (tests/e2e/harness.spawn_worker) and ships one VM with one
disk of random data through the stub VDDK into local AWS. CPU is the worker's own user+system
time plus that of its exited children (the VDDK reader processes, reaped when a disk is done), so
moving reads and hashing out of the worker cannot hide CPU. Run it on a tree before and after a
change to compare; writes bench/results/vddk_pipeline.json (or --out).
Usage: .venv/bin/python bench/bench_vddk_pipeline.py [--initial-gib 1] [--label after]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from snapship.search_attributes import dev_server_flags  # noqa: E402
from tests.e2e.harness import runs_ok, sandbox, spawn_worker, wait_status  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_with_children(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (children count once they are reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


async def bench(initial_gib: float, work: Path) -> dict[str, Any]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    size = int(initial_gib * GIB)
    try:
        async with sandbox(
            work, env, [{"name": "big", "disks": [{"capacity_bytes": size}]}],
            run_worker_inline=False,
        ) as sb:
            chunk = 32 * MIB
            for off in range(0, size, chunk):
                sb.sim.admin.write("big", off, length=min(chunk, size - off), random_seed=off)
            worker = spawn_worker(sb.config, sb.sim.state_dir, work / "worker.log")
            try:
                await asyncio.sleep(2)
                cpu0 = cpu_with_children(worker.pid)
                loop = asyncio.get_running_loop()
                start = loop.time()
                handle = await sb.start("big")
                st = await wait_status(handle, runs_ok(1), timeout=3600)
                seconds = loop.time() - start
                await asyncio.sleep(1)  # let the last reader exit and be reaped
                cpu = cpu_with_children(worker.pid) - cpu0
                run = [r for r in st.runs if r.outcome == "SUCCEEDED"][-1]
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
    finally:
        await env.shutdown()
    shipped_gib = run.bytes_shipped / GIB
    return {
        "initial_gib": initial_gib,
        "seconds": round(seconds, 2),
        "bytes_shipped": run.bytes_shipped,
        "mb_per_s": round(run.bytes_shipped / 1e6 / seconds, 1),
        "cpu_s_worker_and_readers": round(cpu, 2),
        "cpu_s_per_gib": round(cpu / shipped_gib, 2) if shipped_gib else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--initial-gib", type=float, default=1.0)
    parser.add_argument("--label", default="after")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "vddk_pipeline.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapship-bench-vddk-") as tmp:
        result = asyncio.run(bench(args.initial_gib, Path(tmp)))
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if args.out.exists():
        previous = json.loads(args.out.read_text())
    previous[args.label] = result
    args.out.write_text(json.dumps(previous, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
