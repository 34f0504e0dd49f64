"""Test harness: start a simulator in-process (threads) for tests, bench and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
