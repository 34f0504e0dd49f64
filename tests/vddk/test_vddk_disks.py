"""The sandbox disk store: layers, snapshots, consolidation, CBT, paging, relocation."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from vddk_support import pattern

from sandbox.vcsim.disks import (
    GRAIN_SIZE,
    CbtFileFault,
    DiskError,
    DiskStore,
    InvalidOffset,
    VirtualDisk,
    parse_datastore_path,
)
from sandbox.vcsim.vddk_registry import StubRegistry

G = GRAIN_SIZE
MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskStore]:
    s = DiskStore(tmp_path)
    yield s
    s.close()


def _all_extents(
    disk: VirtualDisk, file: str, change_id: str, max_extents: int = 2000
) -> tuple[list[tuple[int, int]], int]:
    out: list[tuple[int, int]] = []
    pages, pos = 0, 0
    capacity = disk.capacity
    while pos < capacity:
        page = disk.query_changed_areas(file, pos, change_id, max_extents)
        assert len(page.extents) <= max_extents and page.length > 0
        for a, n in page.extents:
            assert page.start_offset <= a and a + n <= page.start_offset + page.length
        out += page.extents
        pos = page.start_offset + page.length
        pages += 1
    return out, pages


def _grains_of(extents: list[tuple[int, int]]) -> set[int]:
    return {g for a, n in extents for g in range(a // G, (a + n - 1) // G + 1)}


def test_layout_descriptor_and_sparse_files(store: DiskStore, tmp_path: Path) -> None:
    disk = store.create_disk("ds1", "vm-1", "vm-1", 3 * G + 1024, uuid="u-1")
    folder = tmp_path / "datastores" / "ds1" / "vm-1"
    desc = (folder / "vm-1.vmdk").read_text()
    for line in ['version="1"', f'capacity="{3 * G + 1024}"', 'grain="65536"',
                 'data="vm-1.data"', 'map="vm-1.map"', 'parent=""']:
        assert line in desc.splitlines()
    assert (folder / "vm-1.map").read_bytes() == b"\x00" * 4
    assert (folder / "vm-1.data").stat().st_size == 3 * G + 1024
    disk.write(3 * G + 1000, b"end!")
    assert (folder / "vm-1.map").read_bytes() == b"\x00\x00\x00\x01"
    assert disk.read(3 * G + 998, 26) == b"\0\0end!" + bytes(20)
    assert disk.live_file == "[ds1] vm-1/vm-1.vmdk"
    with pytest.raises(InvalidOffset):
        disk.write(3 * G + 1022, b"abc")
    with pytest.raises(InvalidOffset):
        disk.read(3 * G, 1025)
    with pytest.raises(DiskError):
        store.create_disk("ds1", "vm-1", "x", 1000)  # not whole KiB
    with pytest.raises(DiskError):
        store.create_disk("ds1", "vm-1", "vm-1", 4096)  # files exist


def test_snapshot_freezes_and_copy_on_write(store: DiskStore) -> None:
    disk = store.create_disk("ds1", "vm-1", "vm-1", 4 * G)
    disk.write(0, pattern(0, 4 * G))
    p1 = disk.snapshot()
    assert p1.file == "[ds1] vm-1/vm-1.vmdk" and p1.change_id == ""
    assert disk.live_file == "[ds1] vm-1/vm-1-000001.vmdk"
    disk.write(G + 100, b"Z" * 10)  # partial grain: rest of it must come from the parent
    disk.zero(3 * G, G)
    live = bytearray(pattern(0, 4 * G))
    live[G + 100 : G + 110] = b"Z" * 10
    live[3 * G : 4 * G] = bytes(G)
    assert disk.read(0, 4 * G) == bytes(live)
    assert disk.read(0, 4 * G, p1.file) == pattern(0, 4 * G)


def test_cbt_exact_per_sequence(store: DiskStore) -> None:
    cap = 64 * G + 5 * 1024
    disk = store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    disk.write(0, b"a" * (3 * G))
    s1 = disk.snapshot()
    disk.write(10 * G + 5, b"b" * 10)  # grain 10
    disk.write(20 * G - 1, b"cc")  # grains 19, 20
    s2 = disk.snapshot()
    disk.write(64 * G + 7, b"d")  # last, partial grain
    disk.zero(40 * G, G)  # explicit zeros count as a change
    s3 = disk.snapshot()
    disk.write(50 * G, b"after s3")  # never reported for s3
    assert _grains_of(_all_extents(disk, s1.file, "*")[0]) == {0, 1, 2}
    assert _grains_of(_all_extents(disk, s2.file, s1.change_id)[0]) == {10, 19, 20}
    assert _grains_of(_all_extents(disk, s3.file, s2.change_id)[0]) == {40, 64}
    assert _grains_of(_all_extents(disk, s3.file, s1.change_id)[0]) == {10, 19, 20, 40, 64}
    assert _all_extents(disk, s3.file, s3.change_id)[0] == []
    assert _grains_of(_all_extents(disk, s3.file, "*")[0]) == {0, 1, 2, 10, 19, 20, 40, 64}
    # extents are clipped to the capacity and to startOffset
    page = disk.query_changed_areas(s3.file, 64 * G + 1024, s2.change_id)
    assert page.extents == [(64 * G + 1024, 4 * 1024)] and page.length == 4 * 1024
    with pytest.raises(CbtFileFault):
        disk.query_changed_areas(s2.file, 0, s3.change_id)  # newer than the snapshot
    with pytest.raises(InvalidOffset):
        disk.query_changed_areas(s3.file, cap, "*")
    with pytest.raises(DiskError):
        disk.query_changed_areas(disk.live_file, 0, "*")  # not a snapshot


def test_paging_loops_to_capacity(store: DiskStore) -> None:
    cap = 300 * G
    disk = store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    base = disk.snapshot()
    written = set(range(0, 300, 3)) | {299}
    for g in sorted(written):
        disk.write(g * G + 17, b"x")
    s = disk.snapshot()
    extents, pages = _all_extents(disk, s.file, base.change_id, max_extents=7)
    assert _grains_of(extents) == written
    assert pages == -(-len(written) // 7)
    first = disk.query_changed_areas(s.file, 0, base.change_id, 7)
    assert len(first.extents) == 7 and first.length == first.extents[-1][0] + G


def test_epochs(store: DiskStore) -> None:
    disk = store.create_disk("ds1", "vm-1", "vm-1", 8 * G, cbt_enabled=True)
    s1 = disk.snapshot()
    disk.write(0, b"x")
    disk.new_epoch()  # hard power-off
    disk.write(G, b"y")
    s2 = disk.snapshot()
    with pytest.raises(CbtFileFault):
        disk.query_changed_areas(s2.file, 0, s1.change_id)
    assert s2.change_id.split("/")[0] != s1.change_id.split("/")[0]
    assert _grains_of(_all_extents(disk, s2.file, "*")[0]) == {0, 1}
    disk.set_cbt(False)
    with pytest.raises(CbtFileFault):
        disk.query_changed_areas(s2.file, 0, "*")
    s_off = disk.snapshot()
    assert s_off.change_id == ""
    disk.set_cbt(True)
    s3 = disk.snapshot()
    with pytest.raises(CbtFileFault):
        disk.query_changed_areas(s3.file, 0, s2.change_id)
    with pytest.raises(CbtFileFault):
        disk.query_changed_areas(s_off.file, 0, "*")
    with pytest.raises(DiskError):
        disk.extend(16 * G)  # snapshots exist
    for p in (s3, s_off, s2, s1):
        disk.remove_snapshot(p.file)
    before = disk.snapshot()
    disk.remove_snapshot(before.file)
    disk.extend(16 * G)
    assert disk.capacity == 16 * G and disk.read(15 * G, G) == bytes(G)
    after = disk.snapshot()
    with pytest.raises(CbtFileFault):
        disk.query_changed_areas(after.file, 0, before.change_id)


def test_consolidation_preserves_other_snapshots(store: DiskStore, tmp_path: Path) -> None:
    cap = 6 * G
    disk = store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    disk.write(0, b"A" * cap)
    s1 = disk.snapshot()
    disk.write(G, b"B" * G)
    disk.write(2 * G + 5, b"b")
    s2 = disk.snapshot()
    disk.write(3 * G, b"C" * 100)
    s3 = disk.snapshot()
    disk.write(4 * G, b"L" * G)
    views = {p.file: disk.read(0, cap, p.file) for p in (s1, s2, s3)}
    live = disk.read(0, cap)
    s2_file_before = s2.file
    disk.remove_snapshot(s1.file)  # s2's layer merges into s1's
    assert disk.resolve(s2_file_before) == s1.file
    assert disk.read(0, cap, s2_file_before) == views[s2.file]
    assert disk.read(0, cap, s3.file) == views[s3.file]
    assert disk.read(0, cap) == live
    folder = tmp_path / "datastores" / "ds1" / "vm-1"
    assert not (folder / "vm-1-000001.vmdk").exists()
    assert not (folder / "vm-1-000001.data").exists()
    # CBT still answers for the surviving snapshots
    assert _grains_of(_all_extents(disk, s3.file, s2.change_id)[0]) == {3}
    desc3 = (folder / "vm-1-000003.vmdk").read_text()
    assert 'parent="vm-1-000002.vmdk"' in desc3
    desc_live = (folder / "vm-1-000002.vmdk").read_text()
    assert 'parent="vm-1.vmdk"' in desc_live
    # removing the newest snapshot merges the live delta into it
    disk.remove_snapshot(s3.file)
    assert disk.live_file == s3.file and disk.read(0, cap) == live
    assert disk.read(0, cap, s2_file_before) == views[s2.file]
    disk.remove_snapshot(s2_file_before)
    assert disk.layer_files() == ["[ds1] vm-1/vm-1.vmdk"] and disk.read(0, cap) == live
    with pytest.raises(DiskError):
        disk.remove_snapshot(disk.live_file)


def test_relocate_and_export(store: DiskStore, tmp_path: Path) -> None:
    disk = store.create_disk("ds1", "vm-1", "vm-1", 4 * G)
    disk.write(100, b"hello")
    s1 = disk.snapshot()
    disk.write(2 * G, b"world")
    moved = disk.relocate("ds2", "vm-1-moved")
    assert moved == {
        "[ds1] vm-1/vm-1.vmdk": "[ds2] vm-1-moved/vm-1.vmdk",
        "[ds1] vm-1/vm-1-000001.vmdk": "[ds2] vm-1-moved/vm-1-000001.vmdk",
    }
    assert (tmp_path / "datastores" / "ds2" / "vm-1-moved" / "vm-1.data").exists()
    assert not (tmp_path / "datastores" / "ds1" / "vm-1").exists()
    new_s1 = moved[s1.file]
    assert disk.read(100, 5, new_s1) == b"hello" and disk.read(2 * G, 5, new_s1) == bytes(5)
    with pytest.raises(DiskError):
        disk.read(0, 1, s1.file)  # the old path is gone
    disk.write(3 * G, b"!")  # still writable after the move
    dest = tmp_path / "export.img"
    disk.export_point_in_time(disk.live_file, dest)
    assert dest.read_bytes() == disk.read(0, 4 * G)
    assert os.stat(dest).st_blocks * 512 < 4 * G  # sparse


def test_concurrent_writers(store: DiskStore) -> None:
    disk = store.create_disk("ds1", "vm-1", "vm-1", 64 * G, cbt_enabled=True)
    disk.snapshot()

    def writer(n: int) -> None:
        for i in range(16):
            off = (n * 16 + i) * G // 2 + 7
            disk.write(off, bytes([n + 1]) * 1000)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(4):
        for i in range(16):
            off = (n * 16 + i) * G // 2 + 7
            assert disk.read(off, 1000) == bytes([n + 1]) * 1000


def test_delete_and_lookup(store: DiskStore, tmp_path: Path) -> None:
    disk = store.create_disk("ds1", "vm-9", "vm-9", 2 * G, uuid="abc")
    assert store.disk("abc") is disk
    disk.snapshot()
    store.delete_disk("abc")
    assert not (tmp_path / "datastores" / "ds1" / "vm-9").exists()
    with pytest.raises(DiskError):
        store.disk("abc")
    with pytest.raises(DiskError):
        parse_datastore_path("ds1/vm-1.vmdk")
    assert parse_datastore_path("[ds 1] a/b/c.vmdk") == ("ds 1", "a/b", "c")


def test_registry_files(tmp_path: Path) -> None:
    reg = StubRegistry(tmp_path)
    reg.set_endpoint("127.0.0.1", 8443, "ab:cd")
    assert (tmp_path / "vddk" / "endpoint").read_text() == "127.0.0.1 8443 AB:CD\n"
    reg.set_users({"u1": "p 1", "u2": "p2"})
    users = tmp_path / "vddk" / "users"
    assert users.read_text() == "u1\tp 1\nu2\tp2\n"
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    reg.publish_snapshot("vm-1", "snapshot-2", ["[ds1] vm-1/vm-1.vmdk", "[ds1] vm-1/d2.vmdk"])
    snap = tmp_path / "vddk" / "snapshots" / "vm-1" / "snapshot-2"
    assert snap.read_text().splitlines() == ["[ds1] vm-1/vm-1.vmdk", "[ds1] vm-1/d2.vmdk"]
    reg.withdraw_snapshot("vm-1", "snapshot-2")
    assert not snap.exists()
    reg.set_faults(read_error_every=5, read_latency_us=0)
    assert (tmp_path / "vddk" / "faults").read_text() == "read_error_every=5\n"
    reg.set_faults()
    assert not (tmp_path / "vddk" / "faults").exists()
    with pytest.raises(ValueError):
        reg.publish_snapshot("../x", "s", [])


def test_reopen_state_dir(tmp_path: Path) -> None:
    first = DiskStore(tmp_path)
    disk = first.create_disk("ds1", "vm-1", "vm-1", 16 * G, uuid="d-1", cbt_enabled=True)
    disk.write(0, b"base" * 100)
    s1 = disk.snapshot()
    disk.write(5 * G, b"delta")
    s2 = disk.snapshot()
    disk.write(9 * G, b"unsealed")  # in the current sequence when the store goes away
    live = disk.read(0, 16 * G)
    live_file = disk.live_file
    first.close()

    second = DiskStore(tmp_path)
    again = second.disk("d-1")
    assert again.read(0, 16 * G) == live and again.live_file == live_file
    assert again.read(0, 400, s1.file) == b"base" * 100
    assert _grains_of(_all_extents(again, s2.file, s1.change_id)[0]) == {5}
    s3 = again.snapshot()
    assert s3.file == live_file and again.live_file == "[ds1] vm-1/vm-1-000003.vmdk"
    assert _grains_of(_all_extents(again, s3.file, s2.change_id)[0]) == {9}
    # a restarted simulator re-declaring the same disk gets it back; a different one fails
    assert second.create_disk("ds1", "vm-1", "vm-1", 16 * G, uuid="d-1") is again
    with pytest.raises(DiskError):
        second.create_disk("ds1", "vm-1", "vm-1", 32 * G, uuid="d-1")
    again.remove_snapshot(s1.file)
    assert again.read(0, 16 * G) == live
    second.delete_disk("d-1")
    assert not list((tmp_path / "disks").glob("d-1*"))
    second.close()
