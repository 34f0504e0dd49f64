"""Inventory bench: collect a 10,000-VM inventory from the simulator through pyvmomi.

Prints seconds and round trips for a cold and a warm collection and writes
bench/results/inventory.json. Usage: .venv/bin/python bench/bench_inventory.py [N]
"""

from __future__ import annotations

import json
import ssl
import sys
import tempfile
import time
from pathlib import Path

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.scenario import generate_scenario  # noqa: E402
from sandbox.vcsim.testing import start_simulator  # noqa: E402

PC = vmodl.query.PropertyCollector
PATHS = ["name", "config.instanceUuid", "config.version", "runtime.powerState", "runtime.host",
         "datastore", "config.hardware.device"]


def collect(si) -> tuple[int, int]:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(name="v", type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=PATHS)])
    pc = content.propertyCollector
    res = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=5000))
    trips, n = 1, len(res.objects)
    while res.token:
        res = pc.ContinueRetrievePropertiesEx(res.token)
        n += len(res.objects)
        trips += 1
    view.Destroy()
    return n, trips


def main() -> None:
    n_vms = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        h = start_simulator(generate_scenario(n_vms), Path(tmp))
        start_s = time.monotonic() - t0
        try:
            ctx = ssl.create_default_context(cafile=str(h.ca_path))
            si = SmartConnect(host="localhost", port=h.port,
                              user="administrator@vsphere.local",
                              pwd=h.users["administrator@vsphere.local"], sslContext=ctx)
            runs = []
            for label in ("cold", "warm"):
                t = time.monotonic()
                n, trips = collect(si)
                runs.append({"run": label, "vms": n, "seconds": round(time.monotonic() - t, 2),
                             "round_trips": trips})
                print(f"{label}: {n} VMs in {runs[-1]['seconds']} s, {trips} round trips")
            Disconnect(si)
        finally:
            h.stop()
    out = {"vms": n_vms, "simulator_start_seconds": round(start_s, 2), "paths": PATHS,
           "runs": runs}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "inventory.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
