"""Aggregate throughput and worker CPU per GiB with 1, 2 and 4 worker processes.

The same batch (`--vms` VMs, one disk of `--disk-mib` random data each, a cap of `--vms` so the
permits do not bind) is shipped by 1, 2 and 4 real worker processes against one Temporal server
and one sandbox. Throughput is what local AWS received (PutSnapshotBlock bytes, the far end) over
the wall time from the first start to the last finished run; CPU is user+system of every worker's
process tree (readers included) over the same time. Prints and writes bench/results/workers.json.

Usage: .venv/bin/python bench/bench_workers.py [--vms 8] [--disk-mib 32] [--workers 1,2,4]
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

from temporalio.service import RPCError  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.proctree import tree_cpu_seconds  # noqa: E402
from snapship.config import ClientConfig  # noqa: E402
from snapship.search_attributes import dev_server_flags  # noqa: E402
from tests.e2e.harness import runs_ok, sandbox  # noqa: E402
from tests.e2e.kills import WorkerProcess  # noqa: E402
from workflows.source_server import SourceServerWorkflow  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB


async def one(
    env: WorkflowEnvironment, workers: int, vms: int, disk_mib: int, work: Path
) -> dict[str, Any]:
    names = [f"w{workers}-{i:02d}" for i in range(vms)]

    def no_binding_cap(config: ClientConfig) -> None:
        config.replication.shipping_slots = vms
        config.replication.host_disk_cap = 0
        config.replication.datastore_disk_cap = 0

    async with sandbox(
        work,
        env,
        [{"name": n, "disks": [{"capacity_mib": disk_mib}]} for n in names],
        shipping_slots=vms,
        run_worker_inline=False,
        tune=no_binding_cap,
    ) as sb:
        for i, name in enumerate(names):
            sb.sim.admin.write(name, 0, length=disk_mib * MIB, random_seed=i + 1)
        procs = [
            WorkerProcess(sb.config, sb.sim.state_dir, work / f"worker-{i}.log")
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        try:
            await asyncio.sleep(3)  # imports and vCenter login are not the shipping's cost
            cpu0 = sum(tree_cpu_seconds(p.proc.pid) for p in procs if p.proc)
            put0 = int(sb.aws.admin.stats()["put_bytes"])
            start = time.perf_counter()
            handles = [await sb.start(n) for n in names]
            done = runs_ok(1)
            finished: set[int] = set()
            while len(finished) < len(handles):
                for i, h in enumerate(handles):
                    if i in finished:
                        continue
                    try:
                        if done(await h.query(SourceServerWorkflow.status)):
                            finished.add(i)
                    except RPCError:
                        pass
                if time.perf_counter() - start > 1800:
                    raise TimeoutError(f"{len(handles) - len(finished)} VMs did not finish")
                await asyncio.sleep(0.5)
            seconds = time.perf_counter() - start
            cpu = sum(tree_cpu_seconds(p.proc.pid) for p in procs if p.proc) - cpu0
            received = int(sb.aws.admin.stats()["put_bytes"]) - put0
        finally:
            for p in procs:
                p.stop()
    return {
        "workers": workers,
        "vms": vms,
        "disk_mib": disk_mib,
        "seconds": round(seconds, 2),
        "bytes_received_far_end": received,
        "aggregate_mb_per_s": round(received / 1e6 / seconds, 2),
        "worker_cpu_seconds": round(cpu, 2),
        "worker_cpu_seconds_per_gib": round(cpu / (received / GIB), 2) if received else None,
        "load_average_at_end": os.getloadavg(),
    }


async def bench(counts: list[int], vms: int, disk_mib: int, work: Path) -> dict[str, Any]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    try:
        runs = []
        for n in counts:
            runs.append(await one(env, n, vms, disk_mib, work / f"w{n}"))
            print(json.dumps(runs[-1]), flush=True)
        return {"cpus": os.cpu_count(), "runs": runs}
    finally:
        await env.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--disk-mib", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="snapship-bench-") as tmp:
        results = asyncio.run(bench(counts, args.vms, args.disk_mib, Path(tmp)))
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "workers.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
