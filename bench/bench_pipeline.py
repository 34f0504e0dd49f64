"""Pipeline benchmark on the sandbox: the real worker process ships through the stub VDDK into
local AWS, driven by the embedded Temporal server.

Prints and writes bench/results/pipeline.json:
- initial sync of a multi-GiB disk: MB/s, worker CPU seconds per GiB shipped, peak worker RSS;
- incremental runs: MB/s, bytes shipped / bytes the guest changed (rounded to 512 KiB blocks);
- the duration of a run with no changes on disks of 1, 10 and 100 GiB (must not grow with size),
  from the run's own record (start to end), each run started from an idle workflow;
- worker CPU per status query.
With --perf FILE, `perf record` of the initial sync (native CPU by process: SHA-256, copies).

The worker runs in its own process so its CPU and RSS are its own, not the sandbox's.
Usage: .venv/bin/python bench/bench_pipeline.py [--initial-gib 2] [--profile worker.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.proctree import cpu_split, tree, tree_cpu_seconds  # noqa: E402
from snapship.blocks import EBS_BLOCK_SIZE  # noqa: E402
from snapship.messages import ReplicationCommand  # noqa: E402
from snapship.search_attributes import dev_server_flags  # noqa: E402
from tests.e2e.harness import runs_ok, sandbox, spawn_worker, wait_status  # noqa: E402
from workflows.source_server import SourceServerWorkflow  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def idle(handle: Any, timeout_s: float = 120.0) -> None:
    """Until the workflow runs no activity: the run before has also finished its retention,
    which follows the run's end and would otherwise delay the next run's start."""
    deadline = time.monotonic() + timeout_s
    while (await handle.describe()).raw_description.pending_activities:
        if time.monotonic() > deadline:
            raise TimeoutError("the workflow did not go idle")
        await asyncio.sleep(0.1)


def run_seconds(run: Any) -> float:
    """The run as its record has it (start to end, in the workflow's time): what a user sees,
    without this script's polling."""
    return (
        datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)
    ).total_seconds()


async def timed_run(handle: Any, n: int) -> tuple[float, Any]:
    if n > 1:
        await idle(handle)
        await handle.execute_update(SourceServerWorkflow.run_now, ReplicationCommand())
    # Polled once a second, not the tests' 0.3 s: each status query costs the worker CPU
    # (measured on its own below), and the figure is the shipping's, not the polling's.
    st = await wait_status(handle, runs_ok(n), timeout=3600, every=1.0)
    run = [r for r in st.runs if r.outcome == "SUCCEEDED"][-1]
    return run_seconds(run), run


async def query_cost_ms(handle: Any, pid: int, n: int = 50) -> float:
    """Worker CPU per status query (what `snapship servers` costs per server)."""
    await idle(handle)
    cpu0 = tree_cpu_seconds(pid)
    for _ in range(n):
        await handle.query(SourceServerWorkflow.status)
    return round((tree_cpu_seconds(pid) - cpu0) / n * 1000, 2)


async def worker_running(log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while "worker running" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not start")
        await asyncio.sleep(0.2)


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (dev extra) sampling the worker's GIL holders at 200 Hz into a raw profile (at
    50 Hz a 1 GiB run gave 90 samples); summarise it with bench/profile_summary.py."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--gil", "-r", "200", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_perf(out: Path) -> subprocess.Popen[bytes]:
    """`perf record` of the whole machine (readers start and end during the run); the worker's
    share is picked out afterwards with the pids `watch_tree` saw. Native time (SHA-256 in
    libcrypto, copies in the kernel, VDDK) shows here and not in py-spy's GIL samples."""
    return subprocess.Popen(
        ["perf", "record", "-a", "-g", "-F", "499", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def watch_tree(pid: int, seen: set[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        seen.update(tree(pid))
        await asyncio.sleep(0.2)


async def bench(
    initial_gib: float, work: Path, profile: Path | None = None, perf: Path | None = None
) -> dict[str, Any]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).with_name("temporal")),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    results: dict[str, Any] = {"initial_gib": initial_gib}
    size = int(initial_gib * GIB)
    vms = [
        {"name": "warm", "disks": [{"capacity_mib": 64}]},
        {"name": "big", "disks": [{"capacity_bytes": size}]},
        {"name": "idle-1g", "disks": [{"capacity_gib": 1}]},
        {"name": "idle-10g", "disks": [{"capacity_gib": 10}]},
        {"name": "idle-100g", "disks": [{"capacity_gib": 100}]},
    ]
    try:
        async with sandbox(work, env, vms, run_worker_inline=False) as sb:
            print(f"writing {initial_gib} GiB of random guest data ...", flush=True)
            chunk = 32 * MIB
            for off in range(0, size, chunk):
                sb.sim.admin.write("big", off, length=min(chunk, size - off), random_seed=off)
            for name in ("warm", "idle-1g", "idle-10g", "idle-100g"):
                sb.sim.admin.write(name, 0, length=MIB, random_seed=1)
            worker = spawn_worker(sb.config, sb.sim.state_dir, work / "worker.log")
            try:
                # Count the shipping, not the worker's start-up (imports, build id, clients): on a
                # loaded machine start-up outlasts any fixed pause.
                await worker_running(work / "worker.log")
                # A worker ships many VMs: its one-time start-up (AWS clients and their service
                # models, the first workflow sandbox) is not a cost per GiB. A small VM first.
                await timed_run(await sb.start("warm"), 1)
                results["warm_up"] = "a 64 MiB VM replicated first, not counted"
                await asyncio.sleep(1)
                spy = start_profiler(worker.pid, profile) if profile else None
                perf_proc = start_perf(perf) if perf else None
                pids: set[int] = set()
                watching = asyncio.Event()
                watcher = asyncio.create_task(watch_tree(worker.pid, pids, watching))
                split0 = cpu_split(worker.pid)
                big = await sb.start("big")
                seconds, run = await timed_run(big, 1)
                split = {k: v - split0[k] for k, v in cpu_split(worker.pid).items()}
                cpu = sum(split.values())
                watching.set()
                await watcher
                if perf_proc is not None and perf is not None:
                    perf_proc.send_signal(signal.SIGINT)
                    perf_proc.wait(60)
                    perf.with_suffix(".pids").write_text(",".join(map(str, sorted(pids))))
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on interrupt
                    spy.wait(60)
                shipped_gib = run.bytes_shipped / GIB
                results["initial_sync"] = {
                    "seconds": round(seconds, 2),
                    "bytes_shipped": run.bytes_shipped,
                    "mb_per_s": round(run.bytes_shipped / 1e6 / seconds, 1),
                    "worker_cpu_s_per_gib": round(cpu / shipped_gib, 2) if shipped_gib else None,
                    "cpu_s_per_gib_by_process": {
                        k: round(v / shipped_gib, 2) for k, v in split.items()
                    } if shipped_gib else None,
                }
                incrementals = []
                for n, (writes, length) in enumerate([(64, 4096), (16, 3 * MIB), (1, 64 * MIB)]):
                    touched: set[int] = set()
                    stride = size // writes
                    for i in range(writes):
                        off = i * stride + (i * 7919 % max(1, stride - length))
                        sb.sim.admin.write("big", off, length=length, random_seed=1000 + i)
                        end = min(off + length, size)
                        touched.update(
                            range(off // EBS_BLOCK_SIZE, (end - 1) // EBS_BLOCK_SIZE + 1)
                        )
                    cpu0 = tree_cpu_seconds(worker.pid)
                    seconds, run = await timed_run(big, n + 2)
                    cpu = tree_cpu_seconds(worker.pid) - cpu0
                    changed = len(touched) * EBS_BLOCK_SIZE
                    incrementals.append(
                        {
                            "guest_writes": writes,
                            "write_bytes": length,
                            "seconds": round(seconds, 2),
                            "bytes_shipped": run.bytes_shipped,
                            "bytes_changed_rounded_to_blocks": changed,
                            "shipped_over_changed": round(run.bytes_shipped / changed, 3),
                            "mb_per_s": round(run.bytes_shipped / 1e6 / seconds, 1),
                            "worker_cpu_s": round(cpu, 2),
                        }
                    )
                results["incremental"] = incrementals
                # The simulator's own consolidation delay stands for vCenter's, not ours: zero
                # for this figure (said so in the results).
                sb.sim.admin.configure(consolidation_seconds=0)
                results["no_change_consolidation_seconds"] = 0
                idle_runs = {}
                for name in ("idle-1g", "idle-10g", "idle-100g"):
                    handle = await sb.start(name)
                    await timed_run(handle, 1)
                    seconds, run = await timed_run(handle, 2)
                    assert run.blocks_changed == 0
                    idle_runs[name.removeprefix("idle-")] = round(seconds, 2)
                results["no_change_run_seconds"] = idle_runs
                results["worker_cpu_ms_per_status_query"] = await query_cost_ms(big, worker.pid)
                results["worker_peak_rss_mib"] = round(peak_rss_mib(worker.pid), 1)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
    finally:
        await env.shutdown()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--initial-gib", type=float, default=2.0)
    parser.add_argument(
        "--profile", type=Path, help="py-spy raw profile of the worker during the initial sync"
    )
    parser.add_argument(
        "--perf",
        type=Path,
        help="perf record of the initial sync (needs perf); report the worker's processes with "
        "perf report -i FILE --pids $(cat FILE.pids) --sort pid,dso",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapship-bench-") as tmp:
        results = asyncio.run(bench(args.initial_gib, Path(tmp), args.profile, args.perf))
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
