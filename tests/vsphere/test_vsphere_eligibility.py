"""Eligibility rules on VmFacts built from pyvmomi data objects (no server)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from snapship.vsphere.eligibility import (
    MIN_GUEST_FREE_BYTES,
    check_eligibility,
    hardware_version_number,
    is_client_vm,
)
from snapship.vsphere.facts import DatastoreFacts
from snapship.vsphere.inventory import vm_facts_from_properties
from tests.vsphere import vm_objects as v

GIB = 1024**3
DATASTORES = {
    "datastore-1": DatastoreFacts("datastore-1", "vmfs-1", "VMFS"),
    "datastore-vv": DatastoreFacts("datastore-vv", "vvol-1", "VVOL"),
}


def facts(**kw):
    return vm_facts_from_properties("vm-1", v.vm_props(**kw), datastores=DATASTORES)


def test_plain_vm_is_eligible_without_warnings():
    result = check_eligibility(facts(guest_disks=[("/", 40 * GIB, 30 * GIB)]), None)
    assert result.eligible
    assert result.reasons == []
    assert result.warnings == []


def test_powered_off_vm_is_eligible():
    result = check_eligibility(facts(power="poweredOff", tools="guestToolsNotRunning"), None)
    assert result.eligible, result.reasons
    assert result.warnings == []


@pytest.mark.parametrize(("version", "ok"), [("vmx-04", False), ("vmx-07", True), ("vmx-21", True)])
def test_hardware_version_threshold(version, ok):
    result = check_eligibility(facts(version=version), None)
    assert result.eligible is ok
    if not ok:
        assert any("vmx-07" in r and version in r for r in result.reasons)


def test_hardware_version_parsing():
    assert hardware_version_number("vmx-07") == 7
    assert hardware_version_number("vmx-19") == 19
    assert hardware_version_number("garbage") is None
    assert hardware_version_number(None) is None


def test_foreign_snapshot_blocks_but_own_leftover_only_warns():
    foreign = check_eligibility(facts(snapshot=v.snapshot_tree("before-patch", "x")), None)
    assert not foreign.eligible
    assert any("before-patch" in r and "x" in r for r in foreign.reasons)

    own = check_eligibility(facts(snapshot=v.snapshot_tree("snapship-wf-1@run-3")), None)
    assert own.eligible
    assert any("snapship-wf-1@run-3" in w for w in own.warnings)


def test_independent_disk_is_rejected_with_its_label():
    devs = [v.flat_disk(), v.flat_disk(2001, label="Hard disk 2", mode="independent_persistent")]
    result = check_eligibility(facts(devices=devs), None)
    assert not result.eligible
    assert len(result.reasons) == 1
    assert "Hard disk 2" in result.reasons[0] and "independent" in result.reasons[0]


def test_rdm_and_non_flat_backings_are_rejected():
    result = check_eligibility(facts(devices=[v.flat_disk(), v.rdm_disk(), v.sparse_disk()]), None)
    assert not result.eligible
    joined = "\n".join(result.reasons)
    assert "raw device mapping" in joined and "physicalMode" in joined
    assert "VirtualDiskSparseVer2BackingInfo" in joined
    assert "Hard disk 1" not in joined


def test_vvol_datastore_is_rejected():
    devs = [v.flat_disk(datastore="datastore-vv")]
    result = check_eligibility(facts(devices=devs, datastores=("datastore-vv",)), None)
    assert not result.eligible
    assert any("Virtual Volumes" in r and "vvol-1" in r for r in result.reasons)


def test_template_and_no_disks_are_rejected():
    result = check_eligibility(facts(template=True, devices=[v.vmxnet3()]), None)
    assert not result.eligible
    assert any("template" in r for r in result.reasons)
    assert any("no virtual disks" in r for r in result.reasons)


def test_multi_writer_disk_and_consolidation_needed_are_rejected():
    devs = [v.flat_disk(sharing="sharingMultiWriter")]
    result = check_eligibility(facts(devices=devs, consolidation_needed=True), None)
    assert not result.eligible
    assert any("multi-writer" in r for r in result.reasons)
    assert any("consolidat" in r for r in result.reasons)


def test_client_own_vm_is_excluded_by_instance_bios_or_dmi_uuid():
    vm = facts()
    assert not check_eligibility(vm, vm.instance_uuid.upper()).eligible
    assert not check_eligibility(vm, vm.bios_uuid).eligible
    # Linux /sys/class/dmi/id/product_uuid shows the first three fields byte-swapped.
    dmi = "d5c40342-1111-2222-3333-444455556666"
    assert is_client_vm(vm, dmi)
    assert check_eligibility(vm, "00000000-0000-0000-0000-000000000000").eligible


def test_low_guest_free_space_warns_but_does_not_block():
    low = MIN_GUEST_FREE_BYTES - 1
    result = check_eligibility(
        facts(guest_disks=[("C:\\", 100 * GIB, low), ("D:\\", 100 * GIB, 50 * GIB)]), None
    )
    assert result.eligible
    assert len(result.warnings) == 1
    assert "C:\\" in result.warnings[0] and "2047 MiB free" in result.warnings[0]


def test_tools_not_running_on_powered_on_vm_warns():
    result = check_eligibility(facts(tools="guestToolsNotRunning"), None)
    assert result.eligible
    assert any("VMware Tools is not running" in w for w in result.warnings)


def test_disconnected_vm_is_rejected():
    vm = replace(facts(), connection_state="inaccessible")
    result = check_eligibility(vm, None)
    assert not result.eligible
    assert any("inaccessible" in r for r in result.reasons)
