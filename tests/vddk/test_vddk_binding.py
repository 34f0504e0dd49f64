"""The ctypes binding and DiskReader against the stub libvixDiskLib (no SOAP server).

DiskReader runs the library in a reader process of its own; raw VDDK calls go through the
stub harness (tests/vddk/stub_harness.py), a separate process started with LD_LIBRARY_PATH.
"""

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
from stub_harness import run
from vddk_support import PASSWORD, PORT, STUB_DIR, Env, pattern

from snapship.vddk import binding as b
from snapship.vddk import errors as ve
from snapship.vddk.errors import VddkError

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
    codes = run(
        f"""
conn = connect()
h = lib.open(conn, {point.file!r})
result = [code_of(lib.query_allocated_blocks, h, 0, 128, 64),
          code_of(lib.query_allocated_blocks, h, 0, {cap // 512 + 128}, 128),
          code_of(lib.query_allocated_blocks, h, 0, 200, 128)]  # not whole chunks
lib.close(h); lib.disconnect(conn)
""",
        env.state,
    )
    assert codes == [ve.VIX_E_INVALID_ARG, ve.VIX_E_DISK_OUTOFRANGE, ve.VIX_E_INVALID_ARG]


def _connect_err(env: Env, point: object = None, **kw: object) -> VddkError:
    """The error a DiskReader reports when its reader process's ConnectEx fails."""
    path = point.file if point is not None else "[ds1] vm-1/vm-1.vmdk"  # type: ignore[attr-defined]
    with pytest.raises(VddkError) as ei:
        env.reader(_FakePoint(path), **kw).close()
    return ei.value


class _FakePoint:
    def __init__(self, file: str) -> None:
        self.file = file


def test_connect_error_paths(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    env.publish(disk)
    assert _connect_err(env, password="wrong").code == ve.VIX_E_HOST_USER_PERMISSIONS
    assert _connect_err(env, username="nobody").code == ve.VIX_E_HOST_USER_PERMISSIONS
    e = _connect_err(env, thumbprint="00:11:22")
    assert e.code == ve.VIX_E_NET_HTTP_SSL_SECURITY and "thumbprint" in e.text
    assert _connect_err(env, port=PORT + 1).code == ve.VIX_E_HOST_NETWORK_CONN_REFUSED
    assert _connect_err(env, snapshot_moref="snapshot-9").code == ve.VIX_E_SNAPSHOT_NOTFOUND
    assert _connect_err(env, vm_moref="vm-2").code == ve.VIX_E_SNAPSHOT_NOTFOUND
    assert "snapshot" in _connect_err(env, snapshot_moref="snapshot-9").text.lower()
    assert run("connect(thumbprint=THUMB.lower()); result = 'ok'", env.state) == "ok"


def test_open_error_paths(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    other = env.store.create_disk("ds1", "vm-3", "vm-3", MIB)
    # exists, but not in this snapshot; the live delta is not part of the snapshot either
    assert _connect_err(env, _FakePoint(other.live_file)).code == ve.VIX_E_FILE_NOT_FOUND
    assert _connect_err(env, _FakePoint(disk.live_file)).code == ve.VIX_E_FILE_NOT_FOUND
    codes = run(
        f"""
conn = connect()
result = [code_of(lib.open, conn, {point.file!r}, flags=0)]  # write access
h = lib.open(conn, {point.file!r})
result.append(code_of(lib.read, h, {MIB // 512 - 1}, 2))
buf = ctypes.create_string_buffer(512)
lib._lib.VixDiskLib_Write.restype = ctypes.c_uint64
lib._lib.VixDiskLib_Write.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                                      ctypes.c_void_p]
result.append(lib._lib.VixDiskLib_Write(h, 0, 1, buf) & 0xFFFF)
lib.close(h)
os.unlink(os.path.join(os.environ["SNAPSHIP_STUB_VDDK_STATE"], "vddk/snapshots/vm-1/snapshot-1"))
result.append(code_of(lib.open, conn, {point.file!r}))
lib.disconnect(conn)
""",
        env.state,
    )
    assert codes == [ve.VIX_E_FILE_READ_ONLY, ve.VIX_E_DISK_OUTOFRANGE, ve.VIX_E_FILE_READ_ONLY,
                     ve.VIX_E_SNAPSHOT_NOTFOUND]


def test_read_write_connection_cannot_open(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    code = run(f"result = code_of(lib.open, connect(read_only=False), {point.file!r})", env.state)
    assert code == ve.VIX_E_FILE_READ_ONLY


def test_injected_read_errors_and_recovery(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    disk.write(0, b"q" * MIB)
    point = env.publish(disk)
    env.registry.set_faults(read_error_every=3)
    with env.reader(point) as r:
        outcomes = []
        for i in range(9):
            try:
                outcomes.append(r.read(i * 4096, 4096) == b"q" * 4096)
            except VddkError as exc:
                # masked (the stub sets high bits), transient, one line
                assert exc.code == ve.VIX_E_HOST_TCP_CONN_LOST and exc.transient
                assert str(exc) == "VDDK error 14011: The network connection to the host was lost"
                outcomes.append(False)
        assert outcomes.count(False) == 3 and all(outcomes[i] for i in (0, 1, 3, 4))
    # no retry inside the reader: the ship attempt fails and resumes from its checkpoint
    env.registry.set_faults()  # cleared: re-read at the next Open
    with env.reader(point) as r:
        assert all(r.read(i * 4096, 4096) == b"q" * 4096 for i in range(9))


def test_injected_connect_error_and_recovery(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    env.registry.set_faults(connect_error=ve.VIX_E_HOST_SERVER_NOT_FOUND)
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
    assert str(err) == "VDDK error 16007: out of range"


def test_reader_repr_hides_password(env: Env) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    with env.reader(point) as r:
        assert PASSWORD not in repr(r) and "***" in repr(r)


def test_eight_threads_read_at_once(env: Env) -> None:
    cap = 16 * MIB + 5 * KIB
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap)
    disk.write(0, pattern(0, cap, 7))
    point = env.publish(disk)
    errors: list[str] = []
    with env.reader(point) as r:
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
    assert errors == []


def test_async_reads_overlap_their_latency(env: Env) -> None:
    """ReadAsync keeps `reads_in_flight` reads queued: 12 reads of 100 ms overlap by 4."""
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 32 * MIB)
    disk.write(0, pattern(0, 32 * MIB, 5))
    point = env.publish(disk)
    env.registry.set_faults(read_latency_us=100_000)
    with env.reader(point) as r:
        start = time.monotonic()
        blocks = list(r.blocks(range(0, 48)))  # 12 reads of 2 MiB
        elapsed = time.monotonic() - start
    assert [blk.block_index for blk in blocks] == list(range(48))
    assert all(blk.data == pattern(blk.block_index * 512 * KIB, 512 * KIB, 5) for blk in blocks)
    assert all(blk.digest == hashlib.sha256(blk.data).digest() for blk in blocks)
    # serial reads would take >= 1.2 s; four in flight take ~0.3 s
    assert elapsed < 0.9, elapsed


def test_a_handle_reads_no_faster_than_its_connection_rate(env: Env) -> None:
    """read_mib_per_s holds per connection, as on an NBD connection: queued reads of one handle
    share it (they overlap their latency, not their transfer), and so do two readers at once."""
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 16 * MIB)
    disk.write(0, pattern(0, 16 * MIB, 6))
    point = env.publish(disk)
    env.registry.set_faults(read_mib_per_s=32)
    took: list[float] = []

    def read_all() -> None:
        with env.reader(point) as r:
            start = time.monotonic()
            assert len(list(r.blocks(range(32)))) == 32  # 16 MiB, four 2 MiB reads queued
            took.append(time.monotonic() - start)

    read_all()
    assert took[0] >= 0.45, took  # 16 MiB at 32 MiB/s: half a second, however many queued
    threads = [threading.Thread(target=read_all) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(took) == 3 and min(took[1:]) >= 0.45, took
    env.registry.set_faults()
    with env.reader(point) as r:
        start = time.monotonic()
        list(r.blocks(range(32)))
        assert time.monotonic() - start < 0.45  # unlimited again at the next open


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
        with env.reader(point) as r:
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
    assert e.code == ve.VIX_E_NOT_SUPPORTED


def test_library_log_callback_formats_va_list(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    with caplog.at_level(logging.DEBUG), env.reader(point):
        pass
    assert any(
        f"Open {point.file} (1 links, {MIB // 512} sectors, mode nbdssl)" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    # VDDK 7's phone-home complaint arrives as a library warning and is demoted to debug
    noise = [r for r in caplog.records if "VDDK_PhoneHome" in r.getMessage()]
    assert noise and all(r.levelno == logging.DEBUG for r in noise)
    assert all(r.name == "snapship.vddk.reader_process" for r in caplog.records
               if "Open " in r.getMessage())
