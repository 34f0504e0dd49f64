"""Property: changed areas between two snapshots cover every written byte, and each
snapshot's point-in-time content is exactly what was written before it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from sandbox.vcsim.testing import start_simulator

from .conftest import connect, find_vm

CAP = 1_000 * 1024   # not a grain multiple on purpose

writes = st.lists(st.tuples(st.integers(0, CAP - 1), st.integers(1, 70_000),
                            st.integers(0, 255)), max_size=6)


def _disk(cfg):
    return next(d for d in cfg.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


@pytest.fixture(scope="module")
def cbt_sim(tmp_path_factory: pytest.TempPathFactory):
    sc = {"vcenter": {"consolidation_seconds": 0, "max_changed_extents": 3},
          "users": [{"name": "u", "password": "p"}],
          "datacenters": [{"name": "dc", "vms": [
              {"name": "v", "cbt": True, "disks": [{"capacity_kb": CAP // 1024}]}]}]}
    h = start_simulator(sc, Path(tmp_path_factory.mktemp("cbt")))
    si = connect(h, "u", "p")
    yield h, si, find_vm(si, "v")
    Disconnect(si)
    h.stop()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(before=writes, between=writes)
def test_changed_areas_cover_writes_and_content_is_exact(cbt_sim, before, between) -> None:
    h, _si, vm = cbt_sim
    model = bytearray(h.admin.read("v", 0, CAP))

    def apply(ws):
        for off, n, byte in ws:
            n = min(n, CAP - off)
            h.admin.write("v", off, bytes([byte]) * n)
            model[off:off + n] = bytes([byte]) * n

    apply(before)
    t1 = vm.CreateSnapshot_Task("a", "", False, False)
    WaitForTask(t1)
    s1 = t1.info.result
    at_s1 = bytes(model)
    apply(between)
    t2 = vm.CreateSnapshot_Task("b", "", False, False)
    WaitForTask(t2)
    s2 = t2.info.result
    at_s2 = bytes(model)
    apply([(0, 4096, 0xEE)])    # after s2: must not show up for s2
    d1 = _disk(s1.config)
    covered = bytearray(CAP)
    start = 0
    while start < CAP:
        info = vm.QueryChangedDiskAreas(s2, d1.key, start, d1.backing.changeId)
        assert len(info.changedArea) <= 3
        for e in info.changedArea:
            assert info.startOffset <= e.start
            assert e.start + e.length <= info.startOffset + info.length
            covered[e.start:e.start + e.length] = b"\1" * e.length
        assert info.length > 0
        start = info.startOffset + info.length
    for off, n, _ in between:
        n = min(n, CAP - off)
        assert all(covered[off:off + n]), (off, n)
    for snap, expected in ((s1, at_s1), (s2, at_s2)):
        f = _disk(snap.config).backing.fileName
        assert h.admin.read("v", 0, CAP, file=f) == expected
    WaitForTask(s1.RemoveSnapshot_Task(True))
    assert vm.snapshot is None
    assert h.admin.read("v", 0, CAP) == bytes(model)
