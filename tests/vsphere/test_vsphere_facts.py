"""Converting PropertyCollector answers (pyvmomi objects) into facts; snapshot names (no server)."""

from __future__ import annotations

import pytest

from snapship.vsphere.facts import DatastoreFacts, HostFacts
from snapship.vsphere.inventory import _datacenter_of, snapshot_names, vm_facts_from_properties
from snapship.vsphere.snapshots import parse_snapshot_name, snapshot_name
from tests.vsphere import vm_objects as v


def test_vm_facts_carry_what_conversion_needs():
    props = v.vm_props(
        devices=[v.flat_disk(change_id="52 aa/4"), v.vmxnet3(), v.dvs_nic()],
        guest_disks=[("/", 10 * 1024**3, 4 * 1024**3)],
    )
    vm = vm_facts_from_properties(
        "vm-7",
        props,
        hosts={"host-1": HostFacts("host-1", "esx-01.lab")},
        datastores={"datastore-1": DatastoreFacts("datastore-1", "vmfs-1", "VMFS")},
        networks={"dvportgroup-9": "prod-pg"},
        datacenter="DC1",
    )
    assert (vm.moref, vm.name, vm.host_name, vm.datacenter) == (
        "vm-7",
        "web-01",
        "esx-01.lab",
        "DC1",
    )
    assert (vm.num_cpu, vm.memory_mb, vm.firmware, vm.guest_id) == (4, 8192, "efi", "rhel8_64Guest")
    disk = vm.disks[0]
    assert disk.capacity_bytes == 16 * 1024**3 and disk.change_id == "52 aa/4"
    assert (disk.datastore_name, disk.datastore_type) == ("vmfs-1", "VMFS")
    assert (disk.controller_key, disk.unit_number) == (1000, 0)
    assert [(n.network_name, n.adapter_type) for n in vm.nics] == [
        ("VM Network", "VirtualVmxnet3"),
        ("prod-pg", "VirtualE1000e"),
    ]
    assert vm.guest_disks[0].free_bytes == 4 * 1024**3


def test_snapshot_tree_names_depth_first():
    info = v.snapshot_tree("a", "b", "c")
    assert snapshot_names(info) == ["a", "b", "c"]
    assert snapshot_names(v.snapshot_tree("x", "y", nested=False)) == ["x", "y"]
    assert snapshot_names(None) == []


def test_datacenter_walks_parent_chain():
    parents = {"vm-1": "group-v3", "group-v3": "datacenter-2", "datacenter-2": "group-d1"}
    assert _datacenter_of("vm-1", parents, {"datacenter-2": "DC"}) == "DC"
    assert _datacenter_of("vm-9", parents, {"datacenter-2": "DC"}) is None


def test_snapshot_names_round_trip_and_foreign_names():
    name = snapshot_name("vc-uuid:vm-uuid", "run-12")
    assert name.startswith("snapship-")
    assert parse_snapshot_name(name) == ("vc-uuid:vm-uuid", "run-12")
    assert parse_snapshot_name("before upgrade") is None
    assert parse_snapshot_name("snapship-no-separator") is None
    with pytest.raises(ValueError):
        snapshot_name("wf", "bad@run")
