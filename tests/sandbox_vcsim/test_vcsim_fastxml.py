"""The templated device-list XML is byte-identical to pyvmomi's own serialization."""

from __future__ import annotations

from pathlib import Path

from pyVmomi import vim, vmodl

from sandbox.vcsim.scenario import load_scenario
from sandbox.vcsim.simulator import Simulator
from sandbox.vcsim.soap import serialize_value

VERSION = "vim.version.v8_0_3_0"


def test_device_templates_match_pyvmomi(tmp_path: Path) -> None:
    path = Path(__file__).parents[2] / "sandbox" / "scenarios" / "edge-cases.yaml"
    sim = Simulator(load_scenario(path), tmp_path)
    try:
        vms = sim.inv.vms()
        assert len(vms) > 10
        vms[0].power_state = "poweredOn"
        for vm in vms:
            typ = vim.vm.VirtualHardware._GetPropertyInfo("device").type
            devices = typ(vm.get("config").hardware.device)
            slow = serialize_value(
                vmodl.DynamicProperty(name="config.hardware.device", val=devices), "propSet",
                vmodl.DynamicProperty, VERSION)
            assert vm.devices_xml(VERSION) == slow, vm.name
    finally:
        sim.close()


def test_scalar_fast_path_matches_pyvmomi() -> None:
    from sandbox.vcsim.soap import fast_propset

    values = ["plain", "a<b&c", "", True, False, 0, 42, -1, vim.HostSystem("host-7"),
              vim.Datastore.Array([vim.Datastore("datastore-1"), vim.Datastore("ds-2")]),
              vim.Datastore.Array([])]
    for v in values:
        slow = serialize_value(vmodl.DynamicProperty(name="p.q", val=v), "propSet",
                               vmodl.DynamicProperty, VERSION)
        assert fast_propset("p.q", v) == slow, v
