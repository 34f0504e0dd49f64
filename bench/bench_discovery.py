"""Discovery at scale: read a 10,000-VM vCenter inventory and report duration and round trips.

Runs the production inventory reader (snapship.vsphere.inventory) against the sandbox vSphere
simulator loaded with the generator's uniform scenario, then checks eligibility for every VM the
way discovery does. Prints the figures and writes them to bench/results/discovery.json.

    .venv/bin/python bench/bench_discovery.py [--vms 10000] [--max-objects 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.scenario import DEFAULT_ADMIN, generate_scenario  # noqa: E402
from sandbox.vcsim.testing import start_simulator  # noqa: E402
from snapship.vsphere.eligibility import check_eligibility  # noqa: E402
from snapship.vsphere.inventory import read_inventory  # noqa: E402
from snapship.vsphere.session import VcenterSession  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--max-objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="inventory reads (best is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "discovery.json")
    args = parser.parse_args()

    scenario = generate_scenario(args.vms)
    password = scenario["users"][0]["password"]
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        t0 = time.monotonic()
        sim = start_simulator(scenario, Path(tmp))
        start_s = time.monotonic() - t0
        try:
            with VcenterSession(
                sim.host, DEFAULT_ADMIN, password, port=sim.port, ca_path=str(sim.ca_path)
            ) as session:
                reads = []
                for _ in range(args.repeat):
                    inv = read_inventory(session, max_objects=args.max_objects)
                    reads.append(inv)
                    print(
                        f"read {len(inv.vms)} VMs, {inv.objects_read} objects in "
                        f"{inv.duration_s:.2f} s with {inv.round_trips} round trips"
                    )
                best = min(reads, key=lambda i: i.duration_s)
                t1 = time.monotonic()
                results = [check_eligibility(vm, None) for vm in best.vms]
                eligibility_s = time.monotonic() - t1
        finally:
            sim.stop()

    figures = {
        "vms": len(best.vms),
        "objects_read": best.objects_read,
        "max_objects_per_page": args.max_objects,
        "round_trips": best.round_trips,
        "inventory_seconds": round(best.duration_s, 3),
        "inventory_seconds_all_reads": [round(r.duration_s, 3) for r in reads],
        "ms_per_vm": round(1000 * best.duration_s / max(1, len(best.vms)), 3),
        "eligibility_seconds": round(eligibility_s, 3),
        "eligible_vms": sum(r.eligible for r in results),
        "simulator_start_seconds": round(start_s, 2),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "note": "client and simulator share this machine's cores; server time is included",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
