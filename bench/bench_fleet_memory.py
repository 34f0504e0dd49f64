"""Memory at the cap: many VMs shipping at once through one worker host.

The real worker runs as its own process (with whatever reader processes it starts) against the
sandbox; `--vms` VMs with one disk of `--disk-mib` random data each start their first sync at
the same moment, with the shipping cap, host and datastore disk caps raised to `--vms`. Samples
the RSS of the worker and all its descendants every 0.2 s and prints and writes
bench/results/fleet_memory.json: peak RSS of the process tree (sum of RSS at the worst sample,
and the worker's own VmHWM), aggregate MB/s from the first start to the last finished run, the
most VMs seen shipping at once, and the configured per-VM bound on buffered blocks
(disks_in_parallel x ebs_concurrency x 512 KiB).

Usage: .venv/bin/python bench/bench_fleet_memory.py [--vms 50] [--disk-mib 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.service import RPCError  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.proctree import status_kib, tree, tree_rss_kib  # noqa: E402
from snapship.blocks import EBS_BLOCK_SIZE  # noqa: E402
from snapship.config import ClientConfig  # noqa: E402
from snapship.search_attributes import dev_server_flags  # noqa: E402
from tests.e2e.harness import runs_ok, sandbox, spawn_worker  # noqa: E402
from workflows.source_server import SourceServerWorkflow  # noqa: E402

MIB = 1024 * 1024


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.peak_processes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            pids = tree(self.pid)
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))
            self.peak_processes = max(self.peak_processes, len(pids))


async def bench(vms: int, disk_mib: int, work: Path) -> dict[str, Any]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    names = [f"fleet-{i:02d}" for i in range(vms)]

    def at_the_cap(config: ClientConfig) -> None:
        config.replication.shipping_slots = vms
        config.replication.host_disk_cap = vms
        config.replication.datastore_disk_cap = vms

    try:
        async with sandbox(
            work,
            env,
            [{"name": n, "disks": [{"capacity_mib": disk_mib}]} for n in names],
            shipping_slots=vms,
            run_worker_inline=False,
            tune=at_the_cap,
        ) as sb:
            for i, name in enumerate(names):
                sb.sim.admin.write(name, 0, length=disk_mib * MIB, random_seed=i + 1)
            worker = spawn_worker(sb.config, sb.sim.state_dir, work / "worker.log")
            sampler = RssSampler(worker.pid)
            try:
                await asyncio.sleep(2)
                idle_kib = tree_rss_kib(worker.pid)
                sampler.start()
                start = time.perf_counter()
                handles = await asyncio.gather(*(sb.start(n) for n in names))
                # One poller, one query per VM at a time: 50 pollers overflow the server's
                # query buffer on a loaded machine.
                most_at_once = 0
                finals: dict[int, Any] = {}
                done = runs_ok(1)
                while len(finals) < len(handles):
                    shipping = 0
                    for i, h in enumerate(handles):
                        if i in finals:
                            continue
                        try:
                            st = await h.query(SourceServerWorkflow.status)
                        except RPCError:
                            continue
                        if done(st):
                            finals[i] = st
                        elif st.data_replication_state in ("INITIAL_SYNC", "SHIPPING_SNAPSHOT"):
                            shipping += 1
                    most_at_once = max(most_at_once, shipping)
                    if time.perf_counter() - start > 3600:
                        raise TimeoutError(f"{len(handles) - len(finals)} VMs did not finish")
                    await asyncio.sleep(1.0)
                seconds = time.perf_counter() - start
                shipped = sum(
                    [r for r in st.runs if r.outcome == "SUCCEEDED"][-1].bytes_shipped
                    for st in finals.values()
                )
                cfg = sb.config.replication
                per_vm_buffers = cfg.disks_in_parallel * cfg.ebs_concurrency * EBS_BLOCK_SIZE
                return {
                    "vms": vms,
                    "disk_mib": disk_mib,
                    "seconds": round(seconds, 2),
                    "bytes_shipped": shipped,
                    "aggregate_mb_per_s": round(shipped / 1e6 / seconds, 1),
                    "most_vms_shipping_at_once_seen": most_at_once,
                    "worker_tree_idle_rss_mib": round(idle_kib / 1024, 1),
                    "worker_tree_peak_rss_mib": round(sampler.peak_kib / 1024, 1),
                    "worker_vmhwm_mib": round(status_kib(worker.pid, "VmHWM") / 1024, 1),
                    "worker_tree_processes": sampler.peak_processes,
                    "ebs_concurrency": cfg.ebs_concurrency,
                    "disks_in_parallel": cfg.disks_in_parallel,
                    "per_vm_block_buffer_bound_mib": per_vm_buffers / MIB,
                    "load_average_at_end": os.getloadavg(),
                }
            finally:
                sampler.stop.set()
                worker.send_signal(signal.SIGTERM)
                worker.wait(120)
    finally:
        await env.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--disk-mib", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapship-bench-") as tmp:
        results = asyncio.run(bench(args.vms, args.disk_mib, Path(tmp)))
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet_memory.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
