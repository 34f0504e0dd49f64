"""Test harness: start a simulator in-process (threads) for tests, bench and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyVmomi import vim, vmodl

from sandbox.vcsim.admin_client import AdminClient
from sandbox.vcsim.scenario import load_scenario
from sandbox.vcsim.server import SimulatorServer
from sandbox.vcsim.simulator import Simulator


@dataclass
class SimulatorHandle:
    """A running simulator: where it is, how to trust it, who may log in, and stop()."""

    host: str
    port: int
    url: str
    ca_path: Path
    thumbprint: str
    admin_url: str
    admin: AdminClient
    users: dict[str, str]
    state_dir: Path
    server: Any = field(repr=False, default=None)

    @property
    def simulator(self) -> Simulator:
        sim: Simulator = self.server.sim
        return sim

    def stop(self) -> None:
        self.server.stop()


def start_simulator(scenario: Path | dict[str, Any], state_dir: Path,
                    hostname: str = "localhost", port: int = 0) -> SimulatorHandle:
    """Build the scenario's inventory and serve it on a free loopback port."""
    sim = Simulator(load_scenario(scenario), Path(state_dir))
    srv = SimulatorServer(sim, port=port, hostname=hostname)
    srv.start()
    return SimulatorHandle(
        host=hostname, port=srv.port, url=srv.url, ca_path=srv.tls.ca_cert,
        thumbprint=srv.tls.thumbprint_sha1, admin_url=srv.admin_url,
        admin=AdminClient(srv.admin_url), users={u.name: u.password for u in sim.users.values()},
        state_dir=Path(state_dir), server=srv)


INVENTORY_PATHS = ["name", "config.instanceUuid", "config.version", "runtime.powerState",
                   "runtime.host", "datastore", "config.hardware.device"]


def collect_inventory(si: Any, paths: list[str] = INVENTORY_PATHS,
                      max_objects: int = 5000) -> tuple[list[Any], int]:
    """Full VM inventory through one container view, paged as a client would (raw pyvmomi, for
    the simulator's own scale test and bench); returns (objects, round trips)."""
    pc_type = vmodl.query.PropertyCollector
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    spec = pc_type.FilterSpec(
        objectSet=[pc_type.ObjectSpec(obj=view, skip=True, selectSet=[
            pc_type.TraversalSpec(name="v", type=vim.view.ContainerView, path="view",
                                  skip=False)])],
        propSet=[pc_type.PropertySpec(type=vim.VirtualMachine, pathSet=paths)])
    pc = content.propertyCollector
    res = pc.RetrievePropertiesEx([spec], pc_type.RetrieveOptions(maxObjects=max_objects))
    trips = 1
    objs = list(res.objects)
    while res.token:
        res = pc.ContinueRetrievePropertiesEx(res.token)
        objs.extend(res.objects)
        trips += 1
    view.Destroy()
    return objs, trips
