"""The ctypes binding and DiskReader against the stub libvixDiskLib (no SOAP server)."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pickle
import subprocess
import threading
import time
from pathlib import Path

import pytest
from vddk_support import HOST, PASSWORD, PORT, STUB_DIR, THUMB, USER, Env, pattern

from snapship.vddk import binding as b
from snapship.vddk.binding import VddkError

KIB = 1024
MIB = 1024 * 1024


def test_struct_layouts_match_vddk_abi() -> None:
    # sizes/offsets of the VDDK 7.0.3 x86-64 structs (LP64)
    cp = b.VixDiskLibConnectParams
    assert cp.vmxSpec.offset == 0 and cp.serverName.offset == 8 and cp.thumbPrint.offset == 16
    assert cp.privateUse.offset == 24 and cp.credType.offset == 32 and cp.creds.offset == 40
    assert cp.port.offset == 64 and cp.nfcHostPort.offset == 68 and cp.vimApiVer.offset == 72
    assert cp.reserved.offset == 80 and cp.reserved2.offset == 88 and cp.spec.offset == 96
    assert cp.specType.offset == 120 and ctypes.sizeof(cp) == 128
    info = b.VixDiskLibInfo
    assert info.capacity.offset == 24 and info.adapterType.offset == 32
    assert info.numLinks.offset == 36 and info.parentFileNameHint.offset == 40
    assert info.uuid.offset == 48 and ctypes.sizeof(info) == 56
    assert b.VixDiskLibBlockList.blocks.offset == 8 and ctypes.sizeof(b.VixDiskLibBlock) == 16


def test_capacity_info_and_odd_reads(env: Env) -> None:
    cap = 5 * MIB + 3 * KIB  # not a multiple of 512 KiB nor of a grain
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap)
    disk.write(0, pattern(0, cap))
    point = env.publish(disk)
    with env.reader(point) as r:
        assert r.capacity == cap
        assert r.info.capacity_sectors == cap // 512
        assert r.info.uuid == disk.uuid
        assert r.transport_mode == "nbdssl"
        for off, ln in [(0, 1), (1, 511), (511, 2), (777, 3 * MIB + 13), (cap - 1, 1),
                        (cap - 3 * KIB - 5, 3 * KIB + 5), (cap - 700, 700), (4 * MIB + 1, 0)]:
            assert r.read(off, ln) == pattern(off, ln), (off, ln)
        assert hashlib.sha256(r.read(0, cap)).digest() == hashlib.sha256(pattern(0, cap)).digest()
        with pytest.raises(ValueError):
            r.read(cap - 10, 11)


def test_snapshot_view_not_live_and_chain(env: Env) -> None:
    cap = 2 * MIB
    disk = env.store.create_disk("ds1", "vm-2", "vm-2", cap)
    disk.write(0, pattern(0, cap, 1))
    disk.snapshot()  # an older frozen layer below the published one
    disk.write(100_000, b"B" * 70_000)  # partial grains: copy-on-write from the parent
    point = env.publish(disk, vm="vm-2")
    disk.write(0, b"L" * cap)  # live writes after the snapshot are invisible to it
    expected = bytearray(pattern(0, cap, 1))
    expected[100_000:170_000] = b"B" * 70_000
    with env.reader(point, vm="vm-2") as r:
        assert r.info.num_links == 2 and r.info.parent_file_name_hint == "vm-2.vmdk"
        assert r.read(0, cap) == bytes(expected)


def test_allocated_blocks(env: Env) -> None:
    cap = 10 * MIB + 1 * KIB
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap)
    disk.write(65536 * 3 + 10, b"x")
    disk.write(4 * MIB, b"y" * (65536 * 2))
    disk.write(cap - 1, b"z")
    point = env.publish(disk)
    with env.reader(point) as r:
        assert r.allocated_ranges() == [
            (65536 * 3, 65536), (4 * MIB, 2 * 65536), (10 * MIB, KIB)]
        # 512 KiB chunks: whole chunks reported
        assert r.allocated_ranges(chunk_sectors=1024) == [
            (0, 512 * KIB), (4 * MIB, 512 * KIB), (10 * MIB, KIB)]
        slot_handle = r._idle.get()
        try:
            with pytest.raises(VddkError) as ei:
                env.lib.query_allocated_blocks(slot_handle.handle, 0, 128, 64)
            assert ei.value.code == b.VIX_E_INVALID_ARG
            with pytest.raises(VddkError) as ei:
                env.lib.query_allocated_blocks(slot_handle.handle, 0, cap // 512 + 128, 128)
            assert ei.value.code == b.VIX_E_DISK_OUTOFRANGE
        finally:
            r._idle.put(slot_handle)


def _connect_err(env: Env, **kw: object) -> VddkError:
    args: dict = dict(server=HOST, port=PORT, thumbprint=THUMB, username=USER, password=PASSWORD,
                vm_moref="vm-1", snapshot_moref="snapshot-1")
    args.update(kw)
    with pytest.raises(VddkError) as ei:
        env.lib.connect(**args)
    return ei.value


def test_connect_error_paths(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    env.publish(disk)
    assert _connect_err(env, password="wrong").code == b.VIX_E_HOST_USER_PERMISSIONS
    assert _connect_err(env, username="nobody").code == b.VIX_E_HOST_USER_PERMISSIONS
    e = _connect_err(env, thumbprint="00:11:22")
    assert e.code == b.VIX_E_NET_HTTP_SSL_SECURITY and "thumbprint" in e.text
    assert _connect_err(env, port=PORT + 1).code == b.VIX_E_HOST_NETWORK_CONN_REFUSED
    assert _connect_err(env, snapshot_moref="snapshot-9").code == b.VIX_E_SNAPSHOT_NOTFOUND
    assert _connect_err(env, vm_moref="vm-2").code == b.VIX_E_SNAPSHOT_NOTFOUND
    assert "snapshot" in _connect_err(env, snapshot_moref="snapshot-9").text.lower()
    conn = env.lib.connect(server=HOST, port=PORT, thumbprint=THUMB.lower(), username=USER,
                           password=PASSWORD, vm_moref="vm-1", snapshot_moref="snapshot-1")
    env.lib.disconnect(conn)


def test_open_error_paths(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    other = env.store.create_disk("ds1", "vm-3", "vm-3", MIB)
    conn = env.lib.connect(server=HOST, port=PORT, thumbprint=THUMB, username=USER,
                           password=PASSWORD, vm_moref="vm-1", snapshot_moref="snapshot-1")
    try:
        with pytest.raises(VddkError) as ei:
            env.lib.open(conn, other.live_file)  # exists, but not in this snapshot
        assert ei.value.code == b.VIX_E_FILE_NOT_FOUND
        with pytest.raises(VddkError) as ei:
            env.lib.open(conn, disk.live_file)  # the live delta is not part of the snapshot
        assert ei.value.code == b.VIX_E_FILE_NOT_FOUND
        with pytest.raises(VddkError) as ei:
            env.lib.open(conn, point.file, flags=0)  # write access
        assert ei.value.code == b.VIX_E_FILE_READ_ONLY
        handle = env.lib.open(conn, point.file)
        try:
            with pytest.raises(VddkError) as ei:
                env.lib.read(handle, MIB // 512 - 1, 2)
            assert ei.value.code == b.VIX_E_DISK_OUTOFRANGE and "range" in ei.value.text
            buf = ctypes.create_string_buffer(512)
            env.lib._lib.VixDiskLib_Write.restype = ctypes.c_uint64
            env.lib._lib.VixDiskLib_Write.argtypes = [
                ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]
            assert env.lib._lib.VixDiskLib_Write(handle, 0, 1, buf) == b.VIX_E_FILE_READ_ONLY
        finally:
            env.lib.close(handle)
        env.registry.withdraw_snapshot("vm-1", "snapshot-1")
        with pytest.raises(VddkError) as ei:
            env.lib.open(conn, point.file)
        assert ei.value.code == b.VIX_E_SNAPSHOT_NOTFOUND
    finally:
        env.lib.disconnect(conn)


def test_read_write_connection_cannot_open(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    conn = env.lib.connect(server=HOST, port=PORT, thumbprint=THUMB, username=USER,
                           password=PASSWORD, vm_moref="vm-1", snapshot_moref="snapshot-1",
                           read_only=False)
    try:
        with pytest.raises(VddkError) as ei:
            env.lib.open(conn, point.file)
        assert ei.value.code == b.VIX_E_FILE_READ_ONLY
    finally:
        env.lib.disconnect(conn)


def test_injected_read_errors_and_recovery(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    disk.write(0, b"q" * MIB)
    point = env.publish(disk)
    env.registry.set_faults(read_error_every=3)
    with env.reader(point, max_handles=1, retries=0) as r:
        outcomes = []
        for i in range(9):
            try:
                outcomes.append(r.read(i * 4096, 4096) == b"q" * 4096)
            except VddkError as exc:
                assert exc.code == b.VIX_E_HOST_TCP_CONN_LOST
                outcomes.append(False)
        assert outcomes.count(False) == 3 and all(outcomes[i] for i in (0, 1, 3, 4))
    # with retries (the default) each failed read reconnects and succeeds
    with env.reader(point, max_handles=2) as r:
        assert all(r.read(i * 4096, 4096) == b"q" * 4096 for i in range(9))
        assert len(r._all) <= 2
    env.registry.set_faults(read_error_every=1)  # every read fails: retries run out
    with env.reader(point, retries=2) as r, pytest.raises(VddkError) as ei:
        r.read(0, 512)
    assert ei.value.code == b.VIX_E_HOST_TCP_CONN_LOST
    env.registry.set_faults()  # cleared: re-read at the next Open
    with env.reader(point, retries=0) as r:
        assert all(r.read(i * 4096, 4096) == b"q" * 4096 for i in range(9))


def test_injected_connect_error_and_recovery(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    env.registry.set_faults(connect_error=b.VIX_E_HOST_SERVER_NOT_FOUND)
    with pytest.raises(VddkError) as ei:
        env.reader(point)
    assert ei.value.code == 14008 and ei.value.call == "VixDiskLib_ConnectEx"
    assert ei.value.text == "Cannot connect to the host" and ei.value.transient
    env.registry.set_faults()  # re-read at each ConnectEx: connects again
    with env.reader(point) as r:
        assert r.capacity == MIB


def test_vddk_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(VddkError(16007, "out of range", "VixDiskLib_Read")))
    assert (err.code, err.text, err.call) == (16007, "out of range", "VixDiskLib_Read")
    assert str(err) == "VixDiskLib_Read: VDDK error 16007: out of range"


def test_reader_repr_hides_password(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    with env.reader(point) as r:
        assert PASSWORD not in repr(r) and "***" in repr(r)
        assert PASSWORD not in repr(r._target)


def test_eight_threads_read_at_once(env: Env) -> None:
    cap = 16 * MIB + 5 * KIB
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap)
    disk.write(0, pattern(0, cap, 7))
    point = env.publish(disk)
    errors: list[str] = []
    with env.reader(point, max_handles=8) as r:
        def worker(n: int) -> None:
            rng = (n * 7919) % 4096
            for i in range(24):
                off = (i * 701_717 + n * 333_331 + rng) % (cap - 3 * MIB)
                ln = 1 + (i * 104_729 + n) % (2 * MIB + 777)
                if r.read(off, ln) != pattern(off, ln, 7):
                    errors.append(f"thread {n} read {off}+{ln}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(r._all) <= 8
    assert errors == []


def test_reads_release_the_gil(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    env.registry.set_faults(read_latency_us=100_000)
    with env.reader(point, max_handles=4) as r:
        threads = [threading.Thread(target=lambda: [r.read(0, 512) for _ in range(3)])
                   for _ in range(4)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    # 12 reads of 100 ms each: >= 1.2 s if calls held the GIL, ~0.3 s when they overlap
    assert elapsed < 0.8, elapsed


def test_snapshot_is_frozen_while_guest_writes(env: Env) -> None:
    cap = 24 * MIB
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    disk.write(0, pattern(0, cap, 3))
    point = env.publish(disk)
    expected = hashlib.sha256(pattern(0, cap, 3)).hexdigest()
    stop = threading.Event()
    writes = [0]

    def guest() -> None:
        i = 0
        while not stop.is_set():
            off = (i * 1_048_573) % (cap - 300_000)
            disk.write(off, os.urandom(1 + i % 300_000))
            i += 1
            writes[0] = i

    g = threading.Thread(target=guest)
    g.start()
    try:
        with env.reader(point, max_handles=4) as r:
            results: list[str] = []

            def read_all() -> None:
                h = hashlib.sha256()
                pos = 0
                while pos < cap:
                    n = min(2 * MIB + 512, cap - pos)
                    h.update(r.read(pos, n))
                    pos += n
                results.append(h.hexdigest())

            readers = [threading.Thread(target=read_all) for _ in range(3)]
            for t in readers:
                t.start()
            for t in readers:
                t.join()
    finally:
        stop.set()
        g.join()
    assert writes[0] > 10
    assert results == [expected] * 3
    assert disk.read(0, cap) != pattern(0, cap, 3)  # the live disk did change


def test_ctypes_layout_equals_c_header(tmp_path: Path) -> None:
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"vixDiskLib.h\"\n"
        "int main(void){printf(\"%zu %zu %zu %zu %zu %zu %zu\",\n"
        " sizeof(VixDiskLibConnectParams), offsetof(VixDiskLibConnectParams, creds),\n"
        " offsetof(VixDiskLibConnectParams, port), offsetof(VixDiskLibConnectParams, specType),\n"
        " sizeof(VixDiskLibInfo), offsetof(VixDiskLibInfo, capacity),\n"
        " offsetof(VixDiskLibBlockList, blocks));return 0;}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", f"-I{STUB_DIR}", "-o", str(exe), str(src)], check=True)
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True,
                                          check=True).stdout.split()]
    cp = b.VixDiskLibConnectParams
    assert got == [ctypes.sizeof(cp), cp.creds.offset, cp.port.offset, cp.specType.offset,
                   ctypes.sizeof(b.VixDiskLibInfo), b.VixDiskLibInfo.capacity.offset,
                   b.VixDiskLibBlockList.blocks.offset]


def test_transport_modes(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    with env.reader(point, transport_modes="hotadd:nbd") as r:
        assert r.transport_mode == "nbd"
    e = _connect_err(env, transport_modes="hotadd")
    assert e.code == b.VIX_E_NOT_SUPPORTED


def test_library_log_callback_formats_va_list(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    with caplog.at_level(logging.DEBUG, logger="snapship.vddk.binding"), env.reader(point):
        pass
    assert any(
        f"Open {point.file} (1 links, {MIB // 512} sectors, mode nbdssl)" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
