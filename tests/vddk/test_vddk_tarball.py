"""VDDK tarball validation and safe unpacking (the stub tarball plus crafted bad ones)."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import pytest
from stub_harness import run
from vddk_support import STUB_TARBALL, build_stub

from snapship.vddk.tarball import VddkTarballError, install_tarball, validate_tarball

LIB64 = "vmware-vix-disklib-distrib/lib64"


def _elf(ei_class: int = 2, machine: int = 62, e_type: int = 3) -> bytes:
    ident = b"\x7fELF" + bytes([ei_class, 1, 1]) + bytes(9)
    return ident + struct.pack("<HH", e_type, machine) + bytes(200)


def _make(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def stub_tarball() -> Path:
    build_stub()
    return STUB_TARBALL


def test_good_stub_tarball_installs_and_loads(stub_tarball: Path, tmp_path: Path) -> None:
    info = validate_tarball(stub_tarball)
    assert info.version == "7.0.3" and info.library_member == f"{LIB64}/libvixDiskLib.so.7.0.3"
    lib = install_tarball(stub_tarball, tmp_path / "data")
    assert lib == tmp_path / "data" / LIB64 / "libvixDiskLib.so.7.0.3"
    assert (lib.parent / "libvixDiskLib.so.7").resolve() == lib.resolve()
    assert (tmp_path / "data" / "vmware-vix-disklib-distrib" / "include" / "vixDiskLib.h").exists()
    # loads (companion library included) in a process started with LD_LIBRARY_PATH=lib64
    modes = run("result = lib.list_transport_modes()", None, ld_path=lib.parent, lib=lib)
    assert modes == "nbdssl:nbd"
    # a second install replaces the first cleanly
    assert install_tarball(stub_tarball, tmp_path / "data") == lib


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VddkTarballError, match="not found"):
        validate_tarball(tmp_path / "nope.tar.gz")


def test_corrupt_gzip(stub_tarball: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not gzip at all" * 10)
    with pytest.raises(VddkTarballError, match=r"not a readable \.tar\.gz"):
        validate_tarball(bad)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(stub_tarball.read_bytes()[:3000])
    with pytest.raises(VddkTarballError):
        validate_tarball(truncated)


def test_missing_library(tmp_path: Path) -> None:
    t = _make(tmp_path / "v.tar.gz", {"vmware-vix-disklib-distrib/doc/README": b"x"})
    with pytest.raises(VddkTarballError, match="incomplete VDDK tarball"):
        validate_tarball(t)
    t2 = _make(tmp_path / "w.tar.gz", {"something/else": b"x"})
    with pytest.raises(VddkTarballError, match="not a VDDK tarball"):
        validate_tarball(t2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_elf(ei_class=1, machine=3), "32-bit"),
        (b"#!/bin/sh\necho not a library\n", "not an ELF"),
        (_elf(machine=183), "machine type 183"),
        (_elf(e_type=2), "not a shared object"),
    ],
)
def test_wrong_arch(tmp_path: Path, data: bytes, message: str) -> None:
    t = _make(tmp_path / "v.tar.gz", {f"{LIB64}/libvixDiskLib.so.7.0.3": data})
    with pytest.raises(VddkTarballError, match=message):
        validate_tarball(t)


def test_wrong_version(tmp_path: Path) -> None:
    t = _make(tmp_path / "v.tar.gz", {f"{LIB64}/libvixDiskLib.so.8.0.1": _elf()})
    with pytest.raises(VddkTarballError, match=r"VDDK 8\.0\.1; snapship needs VDDK 7\.0\.3"):
        validate_tarball(t)
    ok = _make(tmp_path / "u.tar.gz", {f"{LIB64}/libvixDiskLib.so.7.0.3.2": _elf()})
    assert validate_tarball(ok).version == "7.0.3.2"


def test_unsafe_members_refused(tmp_path: Path) -> None:
    good = {f"{LIB64}/libvixDiskLib.so.7.0.3": _elf()}
    t = _make(tmp_path / "a.tar.gz", {**good, "vmware-vix-disklib-distrib/../../evil": b"x"})
    with pytest.raises(VddkTarballError, match="outside"):
        install_tarball(t, tmp_path / "data")
    t2 = _make(tmp_path / "b.tar.gz", good, {f"{LIB64}/escape": "../../../../etc/passwd"})
    with pytest.raises(VddkTarballError, match="outside"):
        install_tarball(t2, tmp_path / "data2")
    assert not (tmp_path / "evil").exists()
