"""Location records and move detection (no server)."""

from __future__ import annotations

from pyVmomi import vim

from snapship.vsphere.location import (
    base_disk_name,
    compare_locations,
    location_from_properties,
)
from tests.vsphere import vm_objects as v


def props(host="host-1", datastores=("datastore-1",), devices=None):
    return {
        "runtime.host": vim.HostSystem(host),
        "datastore": [vim.Datastore(d) for d in datastores],
        "config.hardware.device": devices if devices is not None else [v.flat_disk(), v.vmxnet3()],
    }


def with_snapshot_delta(base_file="[ds1] vm-1/vm-1.vmdk", datastore="datastore-1"):
    """The live disk while our snapshot exists: a delta whose parent is the base disk."""
    parent = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=base_file, diskMode="persistent", datastore=vim.Datastore(datastore)
    )
    return v.flat_disk(file_name="[ds1] vm-1/vm-1-000001.vmdk", datastore=datastore, parent=parent)


def test_same_place_is_no_move_even_with_our_snapshot_delta():
    before = location_from_properties("vm-1", props())
    during = location_from_properties("vm-1", props(devices=[with_snapshot_delta()]))
    change = compare_locations(before, during)
    assert not change.moved
    assert change.summary == "no change"
    assert before.disks[0].base_file_name == "[ds1] vm-1/vm-1.vmdk"


def test_vmotion_changes_host():
    before = location_from_properties("vm-1", props())
    after = location_from_properties("vm-1", props(host="host-2"))
    change = compare_locations(before, after)
    assert change.moved and change.host_changed and not change.datastores_changed
    assert "host-1 -> host-2" in change.summary


def test_storage_vmotion_changes_disk_file_and_datastore():
    before = location_from_properties("vm-1", props(devices=[with_snapshot_delta()]))
    moved_disk = with_snapshot_delta("[ds2] vm-1/vm-1.vmdk", datastore="datastore-2")
    after = location_from_properties(
        "vm-1", props(datastores=("datastore-2",), devices=[moved_disk])
    )
    change = compare_locations(before, after)
    assert change.moved and not change.host_changed
    assert change.datastores_changed
    assert change.moved_disks == (2000,)
    assert "[ds2] vm-1/vm-1.vmdk" in change.summary


def test_added_disk_counts_as_change():
    before = location_from_properties("vm-1", props())
    after = location_from_properties(
        "vm-1", props(devices=[v.flat_disk(), v.flat_disk(2001, file_name="[ds1] vm-1/b.vmdk")])
    )
    change = compare_locations(before, after)
    assert change.moved and change.moved_disks == (2001,)


def test_delta_reported_without_parent_chain_is_not_a_move():
    before = location_from_properties("vm-1", props())
    delta_only = v.flat_disk(file_name="[ds1] vm-1/vm-1-000003.vmdk")
    change = compare_locations(
        before, location_from_properties("vm-1", props(devices=[delta_only]))
    )
    assert not change.moved
    assert base_disk_name("[ds1] a-b/a-b_1-000012.vmdk") == "[ds1] a-b/a-b_1.vmdk"
    assert base_disk_name("[ds1] vm/vm-2024.vmdk") == "[ds1] vm/vm-2024.vmdk"
