"""The stub is as strict as the real VDDK: each rule is broken on purpose here and must be caught.

Rules and sources: ../shared/reference/vddk-rules.md. Raw calls run in the stub harness (a
process of its own, started with LD_LIBRARY_PATH); DiskReader runs in its reader process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from stub_harness import STUB_BUILD, run
from vddk_support import HOST, PASSWORD, PORT, THUMB, USER, Env

from snapship.vddk import errors as ve
from snapship.vddk.config_file import VddkSettings, write_config
from snapship.vddk.errors import VddkError, VddkReaderDied, VddkReaderHung
from snapship.vddk.process import VddkLibrary
from snapship.vddk.reader import DiskReader

MIB = 1024 * 1024

OTHER_THREAD = """
out = {}
def other(name, fn, *args):
    def body():
        out[name] = code_of(fn, *args)
    t = threading.Thread(target=body); t.start(); t.join()
"""


@pytest.fixture
def point(env: Env) -> object:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 4 * MIB)
    disk.write(0, b"d" * (4 * MIB))
    return env.publish(disk)


def test_open_close_connect_query_only_from_the_initex_thread(env: Env, point: object) -> None:
    path = point.file  # type: ignore[attr-defined]
    result = run(
        OTHER_THREAD
        + f"""
conn = connect()
other("open", lib.open, conn, {path!r})
h = lib.open(conn, {path!r})
other("query", lib.query_allocated_blocks, h, 0, 128, 128)
other("close", lib.close, h)
other("connect", connect)
other("disconnect", lib.disconnect, conn)
lib.close(h); lib.disconnect(conn)
result = out
""",
        env.state,
    )
    assert result == {k: ve.VIX_E_NOT_SUPPORTED
                      for k in ("open", "query", "close", "connect", "disconnect")}


def test_reads_of_a_handle_from_one_thread(env: Env, point: object) -> None:
    path = point.file  # type: ignore[attr-defined]
    result = run(
        OTHER_THREAD
        + f"""
conn = connect(); h = lib.open(conn, {path!r})
buf = bytearray(512)
lib.read_into(h, 0, buf)            # the main thread now owns the handle's reads
other("read", lib.read_into, h, 0, buf)
lib.close(h); lib.disconnect(conn)
result = out["read"]
""",
        env.state,
    )
    assert result == ve.VIX_E_OBJECT_IS_BUSY


def test_missing_ld_library_path_fails_initex_even_if_set_later() -> None:
    result = run(
        f"""
os.environ["LD_LIBRARY_PATH"] = {str(STUB_BUILD)!r}   # too late: the loader read it at start
try:
    b.VixDiskLib(LIB_PATH)
    result = "loaded"
except VddkError as exc:
    result = str(exc)
""",
        None,
        ld_path=None,
        init=False,
    )
    assert result.startswith("VDDK error 4: The file was not found (cannot load libvixDiskLibVim")
    assert "LD_LIBRARY_PATH" in result


def test_reader_process_without_ld_library_path_fails_clearly(
    env: Env, point: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def without(self: VddkLibrary) -> dict[str, str]:
        e = dict(os.environ)
        e.pop("LD_LIBRARY_PATH", None)
        return e

    monkeypatch.setattr(VddkLibrary, "start_environment", without)
    with pytest.raises(VddkError) as ei:
        env.reader(point)
    assert ei.value.code == ve.VIX_E_FILE_NOT_FOUND
    assert "LD_LIBRARY_PATH" in str(ei.value) and "\n" not in str(ei.value)


def test_connect_params_kept_until_disconnect(env: Env, point: object) -> None:
    path = point.file  # type: ignore[attr-defined]
    result = run(
        f"""
# broken on purpose: free the parameters right after ConnectEx (what the old binding did)
conn = connect()
lib._lib.VixDiskLib_FreeConnectParams(conn.params)
freed_open = code_of(lib.open, conn, {path!r})
freed_disconnect = code_of(lib._check, lib._lib.VixDiskLib_Disconnect(conn.pointer), "D")
# broken on purpose: parameters that did not come from AllocateConnectParams
own = b.VixDiskLibConnectParams()
own.vmxSpec, own.serverName, own.thumbPrint = b"moref=vm-1", HOST.encode(), THUMB.encode()
own.credType = b.CRED_UID
own.creds.uid.userName, own.creds.uid.password = USER.encode(), PASSWORD.encode()
own.port = PORT
out = ctypes.c_void_p()
not_allocated = lib._lib.VixDiskLib_ConnectEx(ctypes.byref(own), b"\\x01", b"snapshot-1",
                                              b"nbd", ctypes.byref(out)) & 0xFFFF
# kept (the binding's way): Open and Disconnect work
good = connect(); h = lib.open(good, {path!r}); lib.close(h); lib.disconnect(good)
result = [freed_open, freed_disconnect, not_allocated]
""",
        env.state,
    )
    assert result == [ve.VIX_E_INVALID_ARG] * 3


def test_error_codes_carry_high_bits_and_are_masked(env: Env, point: object) -> None:
    raw = run(
        """
out = ctypes.c_void_p()
conn = connect()
result = lib._lib.VixDiskLib_Open(conn.pointer, b"[ds1] nope.vmdk", 4, ctypes.byref(out))
lib.disconnect(conn)
""",
        env.state,
    )
    assert raw != ve.VIX_E_FILE_NOT_FOUND  # an unmasked comparison would miss it
    assert raw & 0xFFFF == ve.VIX_E_FILE_NOT_FOUND
    err = VddkError(raw, "The file was not found", "VixDiskLib_Open")
    assert err.code == ve.VIX_E_FILE_NOT_FOUND and not err.transient
    assert str(err) == "VDDK error 4: The file was not found"
    for code in (14009, 14014, 14015, 36):
        assert VddkError(code | 0x7_0005_0000, "x").transient
    assert not VddkError(ve.VIX_E_NET_HTTP_SSL_SECURITY | 0x50000, "x").transient
    assert str(VddkError(14008 | 0x50000, "Cannot connect to the host")) == (
        "VDDK error 14008: Cannot connect to the host"
    )


def test_initex_once_in_main_thread_and_nothing_after_exit(env: Env, point: object) -> None:
    result = run(
        """
from stub_harness import STUB_LIB
first = b.VixDiskLib(STUB_LIB)
twice = code_of(b.VixDiskLib, STUB_LIB)
first.exit()
after_exit = code_of(first.connect, server=HOST, port=PORT, thumbprint=THUMB, username=USER,
                     password=PASSWORD, vm_moref="vm-1", snapshot_moref="snapshot-1")
result = [twice, after_exit]
""",
        env.state,
        init=False,
    )
    assert result == [ve.VIX_E_FAIL, ve.VIX_E_FAIL]
    in_thread = run(
        """
from stub_harness import STUB_LIB
out = {}
t = threading.Thread(target=lambda: out.setdefault("c", code_of(b.VixDiskLib, STUB_LIB)))
t.start(); t.join()
result = out["c"]
""",
        env.state,
        init=False,
    )
    assert in_thread == ve.VIX_E_FAIL


def test_no_fork_after_initex(env: Env, point: object) -> None:
    code = run(
        """
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    c = code_of(connect)
    os.write(w, str(c).encode()); os._exit(0)
os.waitpid(pid, 0)
result = int(os.read(r, 32))
""",
        env.state,
    )
    assert code == ve.VIX_E_FAIL


def test_close_waits_for_async_reads(env: Env, point: object) -> None:
    path = point.file  # type: ignore[attr-defined]
    env.registry.set_faults(read_latency_us=300_000)
    result = run(
        f"""
conn = connect(); h = lib.open(conn, {path!r})
buf = ctypes.create_string_buffer(4096)
done = []
cb = b.CompletionFunc(lambda data, err: done.append(err))
lib.read_async(h, 0, 8, ctypes.addressof(buf), cb, 7)
busy = code_of(lib.close, h)          # broken on purpose: Close before Wait
lib.wait(h)
lib.close(h); lib.disconnect(conn)
result = [busy, done, buf.raw[:4].decode()]
""",
        env.state,
    )
    assert result == [ve.VIX_E_OBJECT_IS_BUSY, [0], "dddd"]


def test_stalled_read_ends_after_the_config_read_timeout(
    env: Env, point: object, tmp_path: Path
) -> None:
    path = point.file  # type: ignore[attr-defined]
    config = write_config(VddkSettings(read_timeout_ms=700), tmp_path / "work")
    env.registry.set_faults(read_stall=1)
    result = run(
        f"""
import time
conn = connect(); h = lib.open(conn, {path!r})
t0 = time.monotonic()
code = code_of(lib.read, h, 0, 8)
result = [code, time.monotonic() - t0]
lib.close(h); lib.disconnect(conn)
""",
        env.state,
        config=config,
    )
    code, seconds = result
    assert code == ve.VIX_E_HOST_TCP_CONN_LOST
    assert 0.6 <= seconds < 10, seconds


def test_tmp_directory_and_aio_buffers_from_the_config_file(env: Env, tmp_path: Path) -> None:
    config = write_config(VddkSettings(), tmp_path / "work")
    text = config.read_text()
    assert f"tmpDirectory={tmp_path / 'work' / 'tmp'}" in text
    assert "vixDiskLib.nfc.ReadTimeoutMs=60000" in text
    assert "vixDiskLib.nfcAio.Session.BufSizeIn64KB=16" in text
    with pytest.raises(ValueError, match="16 MiB"):
        VddkSettings(aio_buf_size_64k=64, aio_buf_count=8)
    # broken on purpose: a config file asking for 32 MiB of session memory fails Open
    bad = tmp_path / "bad.conf"
    bad.write_text(text.replace("BufCount=4", "BufCount=8").replace("64KB=16", "64KB=64"))
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", MIB)
    point = env.publish(disk)
    code = run(f"result = code_of(lib.open, connect(), {point.file!r})", env.state, config=bad)
    assert code == ve.VIX_E_OUT_OF_MEMORY
    missing = tmp_path / "gone.conf"
    missing.write_text("tmpDirectory=/nonexistent/snapship\n")
    code = run("result = code_of(b.VixDiskLib, LIB_PATH, CONFIG)", env.state, config=missing,
               init=False)
    assert code == ve.VIX_E_FILE_NOT_FOUND


def test_open_handles_are_counted_per_process(env: Env, point: object) -> None:
    from sandbox.vddk_stub.stats import open_handles

    assert open_handles(env.state) == 0
    with env.reader(point) as r:
        assert open_handles(env.state) == 1
        with env.reader(point):
            assert open_handles(env.state) == 2
        assert r.read(0, 4) == b"dddd"
    assert open_handles(env.state) == 0


def test_sigkill_of_a_reader_fails_its_calls_in_one_line(env: Env, point: object) -> None:
    with env.reader(point) as r, env.reader(point) as other:
        os.kill(r.reader_pid, signal.SIGKILL)
        with pytest.raises(VddkReaderDied) as ei:
            for _ in range(200):
                r.read(0, 4096)
                time.sleep(0.01)
        msg = str(ei.value)
        assert "was killed by SIGKILL" in msg and "\n" not in msg and ei.value.transient
        assert other.read(0, 4) == b"dddd"  # the other disk's reader is not disturbed


class _QuickLibrary(VddkLibrary):
    """Answers are due within 1.5 s (the real bound is the NFC timeouts + 30 s)."""

    @property
    def reply_timeout_s(self) -> float:
        return 1.5


def test_a_hung_reader_is_detected_and_stopped(env: Env, point: object, tmp_path: Path) -> None:
    quick = _QuickLibrary(env.lib.lib_path, tmp_path / "work")
    r = DiskReader(quick, server=HOST, port=PORT, thumbprint=THUMB, username=USER,
                   password=PASSWORD, vm_moref="vm-1", snapshot_moref="snapshot-1",
                   disk_path=point.file)  # type: ignore[attr-defined]
    try:
        os.kill(r.reader_pid, signal.SIGSTOP)  # hangs like a reader stuck inside VDDK
        start = time.monotonic()
        with pytest.raises(VddkReaderHung) as ei:
            r.read(0, 4096)
        assert time.monotonic() - start < 30
        assert str(ei.value).endswith("did not answer a read within 2 s and was stopped")
        assert ei.value.transient
    finally:
        r.close()


def test_worker_start_check_names_a_broken_install(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    VddkLibrary(env.lib.lib_path, tmp_path / "ok").check()  # loads, InitEx, exits
    monkeypatch.setattr(VddkLibrary, "lib64", property(lambda self: tmp_path))  # wrong lib64
    with pytest.raises(VddkError, match="LD_LIBRARY_PATH"):
        VddkLibrary(env.lib.lib_path, tmp_path / "bad").check()
