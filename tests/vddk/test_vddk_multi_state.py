"""One process, two simulators: the stub serves each endpoint from its own state directory.

SNAPSHIP_STUB_VDDK_STATE may list several state dirs (':'-separated, like PATH); ConnectEx uses
the one whose vddk/endpoint names the connection's host and port, so a worker that reads from two
vCenters gets each vCenter's disks, and each vCenter's own users and thumbprint are enforced.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vddk_support import HOST, PASSWORD, THUMB, USER, pattern

from sandbox.vcsim.disks import DiskStore
from sandbox.vcsim.vddk_registry import StubRegistry
from snapship.vddk import errors as ve
from snapship.vddk.errors import VddkError
from snapship.vddk.process import VddkLibrary
from snapship.vddk.reader import DiskReader

MIB = 1024 * 1024
THUMB_B = "11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44"
PORT_A, PORT_B = 18501, 18502


def _state(root: Path, port: int, thumb: str, user: str, seed: int) -> tuple[DiskStore, str]:
    store = DiskStore(root)
    registry = StubRegistry(root)
    registry.set_endpoint(HOST, port, thumb)
    registry.set_users({user: PASSWORD})
    disk = store.create_disk("ds1", "vm-1", "vm-1", MIB)
    disk.write(0, pattern(0, MIB, seed))
    point = disk.snapshot()
    registry.publish_snapshot("vm-1", "snapshot-1", [point.file])
    return store, point.file


def test_each_endpoint_reads_its_own_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_lib: VddkLibrary
) -> None:
    store_a, path = _state(tmp_path / "a", PORT_A, THUMB, USER, seed=1)
    store_b, path_b = _state(tmp_path / "b", PORT_B, THUMB_B, "vc2-user", seed=2)
    assert path == path_b  # same datastore path in both vCenters, different disks
    monkeypatch.setenv("SNAPSHIP_STUB_VDDK_STATE", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    try:
        common = dict(vm_moref="vm-1", snapshot_moref="snapshot-1", disk_path=path,
                      password=PASSWORD, server=HOST)
        with DiskReader(stub_lib, port=PORT_A, thumbprint=THUMB, username=USER, **common) as r:
            assert r.read(0, MIB) == pattern(0, MIB, 1)
        with DiskReader(stub_lib, port=PORT_B, thumbprint=THUMB_B, username="vc2-user",
                        **common) as r:
            assert r.read(0, MIB) == pattern(0, MIB, 2)

        def refused(**kw: object) -> int:
            args: dict = dict(common, port=PORT_A, thumbprint=THUMB, username=USER)
            args.update(kw)
            with pytest.raises(VddkError) as ei:  # ConnectEx fails in the reader process
                DiskReader(stub_lib, **args).close()
            return ei.value.code

        # Each vCenter's own users and certificate: nothing leaks across state dirs.
        assert refused(username="vc2-user") == ve.VIX_E_HOST_USER_PERMISSIONS
        assert refused(port=PORT_B, thumbprint=THUMB) == ve.VIX_E_NET_HTTP_SSL_SECURITY
        # An endpoint no listed simulator serves is refused, as with a single state dir.
        assert refused(port=PORT_B + 7) == ve.VIX_E_HOST_NETWORK_CONN_REFUSED
    finally:
        store_a.close()
        store_b.close()
