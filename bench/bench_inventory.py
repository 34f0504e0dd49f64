"""Inventory bench: collect a 10,000-VM inventory from the simulator through pyvmomi.

Prints seconds and round trips for a cold and a warm collection and writes
bench/results/inventory.json. Usage: .venv/bin/python bench/bench_inventory.py [N]
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyVim.connect import Disconnect, SmartConnect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.testing import INVENTORY_PATHS as PATHS  # noqa: E402
from sandbox.vcsim.testing import collect_inventory  # noqa: E402


def collect(si: object) -> tuple[int, int]:
    objs, trips = collect_inventory(si)
    return len(objs), trips


def start_subprocess(n_vms: int, state: Path) -> tuple[subprocess.Popen[bytes], dict]:
    """The simulator in its own process, as in a demo: client and server do not share a GIL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.vcsim", "--generate", str(n_vms), "--port", "0",
         "--state-dir", str(state)], cwd=ROOT, stdout=subprocess.DEVNULL)
    info_path = state / "endpoint.json"
    deadline = time.monotonic() + 120
    while not info_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("simulator did not start")
        time.sleep(0.1)
    return proc, json.loads(info_path.read_text())


def main() -> None:
    n_vms = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        proc, info = start_subprocess(n_vms, Path(tmp))
        start_s = time.monotonic() - t0
        try:
            users = json.loads(Path(info["credentials_file"]).read_text())
            ctx = ssl.create_default_context(cafile=info["ca_path"])
            si = SmartConnect(host="localhost", port=info["port"],
                              user="administrator@vsphere.local",
                              pwd=users["administrator@vsphere.local"], sslContext=ctx)
            runs = []
            for label in ("cold", "warm"):
                t = time.monotonic()
                n, trips = collect(si)
                runs.append({"run": label, "vms": n, "seconds": round(time.monotonic() - t, 2),
                             "round_trips": trips})
                print(f"{label}: {n} VMs in {runs[-1]['seconds']} s, {trips} round trips")
            Disconnect(si)
        finally:
            proc.terminate()
            proc.wait(30)
    out = {"vms": n_vms, "simulator_start_seconds": round(start_s, 2), "paths": PATHS,
           "runs": runs, "note": "simulator in a subprocess; client is pyvmomi 9.1"}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "inventory.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
