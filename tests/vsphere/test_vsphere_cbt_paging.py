"""The changed-area loop against a scripted vCenter answer (no server).

The real paging is exercised against the simulator in test_vsphere_integration.py; here the
answers are scripted to pin the edge cases: last page ending exactly at capacity, areas merged
across page boundaries, no progress, FileFault.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim, vmodl

from snapship.vsphere.cbt import query_changed_areas, scan_changed_areas
from snapship.vsphere.errors import CbtResetRequired, ChangedAreasInvalid

MiB = 1024 * 1024


class ScriptedVm:
    """Answers QueryChangedDiskAreas like ESXi: at most `page` areas per call."""

    def __init__(self, areas, capacity, page=3, fault=None):
        self.areas = sorted(areas)
        self.capacity = capacity
        self.page = page
        self.fault = fault
        self.offsets = []

    def QueryChangedDiskAreas(self, snapshot, deviceKey, startOffset, changeId):
        self.offsets.append(startOffset)
        if self.fault is not None:
            raise self.fault
        if startOffset >= self.capacity:
            raise vmodl.fault.InvalidArgument(msg="startOffset beyond capacity")
        todo = [a for a in self.areas if a[0] >= startOffset][: self.page]
        more = len([a for a in self.areas if a[0] >= startOffset]) > self.page
        end = todo[-1][0] + todo[-1][1] if more else self.capacity
        return vim.VirtualMachine.DiskChangeInfo(
            startOffset=startOffset,
            length=end - startOffset,
            changedArea=[
                vim.VirtualMachine.DiskChangeInfo.DiskChangeExtent(start=s, length=n)
                for s, n in todo
            ],
        )


class _FakeSession:
    def __init__(self, vm):
        self._vm = vm
        self.stub = None

    def vm(self, moref):
        return self._vm


def FakeSession(vm) -> Any:
    """Only what scan_changed_areas touches: .vm() and .stub."""
    return _FakeSession(vm)


def test_all_pages_are_read_and_never_at_capacity():
    capacity = 100 * MiB
    areas = [(i * 2 * MiB, 64 * 1024) for i in range(10)]
    vm = ScriptedVm(areas, capacity, page=3)
    scan = scan_changed_areas(FakeSession(vm), "vm-1", "snapshot-1", 2000, capacity, "*")
    assert scan.extents == areas
    assert scan.calls == 4  # 3 + 3 + 3 + 1 areas
    assert all(o < capacity for o in vm.offsets)
    assert scan.changed_bytes == 10 * 64 * 1024


def test_adjacent_areas_across_a_page_boundary_are_merged():
    capacity = 10 * MiB
    areas = [(0, MiB), (MiB, MiB), (2 * MiB, MiB), (5 * MiB, MiB)]
    vm = ScriptedVm(areas, capacity, page=2)
    assert query_changed_areas(FakeSession(vm), "vm-1", "s", 2000, capacity, "x/1") == [
        (0, 3 * MiB),
        (5 * MiB, MiB),
    ]


def test_no_changes_is_one_call():
    vm = ScriptedVm([], 8 * MiB)
    assert query_changed_areas(FakeSession(vm), "vm-1", "s", 2000, 8 * MiB, "x/1") == []
    assert vm.offsets == [0]


def test_file_fault_means_full_resync():
    vm = ScriptedVm([], 8 * MiB, fault=vim.fault.FileFault(msg="change tracking reset"))
    with pytest.raises(CbtResetRequired) as info:
        query_changed_areas(FakeSession(vm), "vm-1", "s", 2000, 8 * MiB, "x/1")
    assert info.value.device_key == 2000 and "full resync" in str(info.value)


def test_answer_without_progress_is_refused():
    class Stuck(ScriptedVm):
        def QueryChangedDiskAreas(self, snapshot, deviceKey, startOffset, changeId):
            return vim.VirtualMachine.DiskChangeInfo(startOffset=startOffset, length=0)

    with pytest.raises(ChangedAreasInvalid, match="answer covers"):
        query_changed_areas(FakeSession(Stuck([], MiB)), "vm-1", "s", 2000, MiB, "x/1")


def test_area_outside_the_disk_is_refused():
    vm = ScriptedVm([(MiB - 512, 1024)], MiB)
    with pytest.raises(ChangedAreasInvalid, match="outside the disk"):
        query_changed_areas(FakeSession(vm), "vm-1", "s", 2000, MiB, "x/1")
