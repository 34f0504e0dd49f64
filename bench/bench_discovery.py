"""Discovery at scale: read a 10,000-VM vCenter inventory and report duration and round trips.

Runs the production inventory reader (snapship.vsphere.inventory) against the sandbox vSphere
simulator loaded with the generator's uniform scenario, then checks eligibility for every VM the
way discovery does. Prints the figures and writes them to bench/results/discovery.json.

    .venv/bin/python bench/bench_discovery.py [--vms 10000] [--max-objects 1000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.scenario import DEFAULT_ADMIN, generate_scenario  # noqa: E402
from sandbox.vcsim.testing import start_simulator  # noqa: E402
from snapship.vsphere.eligibility import check_eligibility  # noqa: E402
from snapship.vsphere.inventory import read_inventory  # noqa: E402
from snapship.vsphere.session import VcenterSession  # noqa: E402


def _serve(n_vms: int, state_dir: str, conn: Any, stop: Any) -> None:
    """Child process: the simulator gets its own interpreter (and GIL), like a real vCenter."""
    sim = start_simulator(generate_scenario(n_vms), Path(state_dir))
    conn.send((sim.host, sim.port, str(sim.ca_path)))
    stop.wait()
    sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--max-objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="inventory reads (best is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "discovery.json")
    args = parser.parse_args()

    password = generate_scenario(1)["users"][0]["password"]
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        t0 = time.monotonic()
        parent_conn, child_conn = ctx.Pipe()
        stop = ctx.Event()
        child = ctx.Process(target=_serve, args=(args.vms, tmp, child_conn, stop), daemon=True)
        child.start()
        host, port, ca_path = parent_conn.recv()
        start_s = time.monotonic() - t0
        try:
            with VcenterSession(
                host, DEFAULT_ADMIN, password, port=port, ca_path=ca_path, timeout_s=600
            ) as session:
                runs: dict[str, list[dict[str, float]]] = {"fast": [], "pyvmomi": []}
                best = None
                for _ in range(args.repeat):
                    for mode in ("fast", "pyvmomi"):
                        cpu0 = time.process_time()
                        inv = read_inventory(
                            session, max_objects=args.max_objects, fast=mode == "fast"
                        )
                        cpu = time.process_time() - cpu0
                        runs[mode].append(
                            {
                                "seconds": inv.duration_s,
                                "client_cpu_seconds": cpu,
                                "round_trips": inv.round_trips,
                            }
                        )
                        print(
                            f"[{mode}] {len(inv.vms)} VMs, {inv.objects_read} objects in "
                            f"{inv.duration_s:.2f} s (client CPU {cpu:.2f} s), "
                            f"{inv.round_trips} round trips"
                        )
                        if mode == "fast" and (best is None or inv.duration_s < best.duration_s):
                            best = inv
                assert best is not None
                t1 = time.monotonic()
                results = [check_eligibility(vm, None) for vm in best.vms]
                eligibility_s = time.monotonic() - t1
        finally:
            stop.set()
            child.join(60)

    def summary(mode: str) -> dict[str, float]:
        fastest = min(runs[mode], key=lambda r: r["seconds"])
        return {
            "seconds": round(fastest["seconds"], 2),
            "client_cpu_seconds": round(fastest["client_cpu_seconds"], 2),
            "client_cpu_ms_per_vm": round(1000 * fastest["client_cpu_seconds"] / len(best.vms), 3),
            "round_trips": fastest["round_trips"],
        }

    figures = {
        "vms": len(best.vms),
        "objects_read": best.objects_read,
        "max_objects_per_page": args.max_objects,
        "round_trips": best.round_trips,
        "inventory_seconds": round(best.duration_s, 2),
        "fast_reader": summary("fast"),
        "pyvmomi_objects": summary("pyvmomi"),
        "eligibility_seconds": round(eligibility_s, 3),
        "eligible_vms": sum(r.eligible for r in results),
        "simulator_start_seconds": round(start_s, 2),
        "machine": f"{platform.machine()} {platform.python_version()} {mp.cpu_count()} cores",
        "note": "simulator in a child process on the same machine: inventory_seconds includes "
        "its serialization (the simulator, not the client, is the slower side here)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
