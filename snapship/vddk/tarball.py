"""Check that a tarball is VDDK 7.0.3 for Linux x86-64 and unpack it safely.

Decision: the version is read from the library's file name inside the tarball,
`vmware-vix-disklib-distrib/lib64/libvixDiskLib.so.7.0.3[.N]` (VMware names the real file that
way; the tarball's own name is often changed by whoever downloaded it). The file must be an
ELF64 little-endian x86-64 shared object. Unpacking refuses members that would land outside the
destination (absolute paths, "..", links pointing out, devices).
"""

from __future__ import annotations

import re
import shutil
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DISTRIB = "vmware-vix-disklib-distrib"
LIB_DIR = f"{DISTRIB}/lib64"
SUPPORTED_VERSION = (7, 0, 3)
_LIB_NAME = re.compile(r"^libvixDiskLib\.so\.(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?$")
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_DYN = 3
_EM_X86_64 = 62


class VddkTarballError(Exception):
    """The tarball is missing, unreadable, or not VDDK 7.0.3 for Linux x86-64."""


@dataclass(frozen=True)
class VddkTarballInfo:
    """What validation found: the library member and its version."""

    tarball: Path
    library_member: str
    version: str


def _check_elf(header: bytes, member: str) -> None:
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise VddkTarballError(f"{member} is not an ELF shared library")
    if header[4] != _ELFCLASS64:
        raise VddkTarballError(f"{member} is a 32-bit library; VDDK for Linux x86-64 is needed")
    if header[5] != _ELFDATA2LSB:
        raise VddkTarballError(f"{member} is big-endian; VDDK for Linux x86-64 is needed")
    e_type, e_machine = struct.unpack_from("<HH", header, 16)
    if e_machine != _EM_X86_64:
        raise VddkTarballError(
            f"{member} is built for machine type {e_machine}, not x86-64"
        )
    if e_type != _ET_DYN:
        raise VddkTarballError(f"{member} is not a shared object (ELF type {e_type})")


def _open(tarball: Path) -> tarfile.TarFile:
    if not tarball.exists():
        raise VddkTarballError(f"VDDK tarball not found: {tarball}")
    if not tarball.is_file():
        raise VddkTarballError(f"VDDK tarball is not a file: {tarball}")
    try:
        return tarfile.open(tarball, "r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise VddkTarballError(
            f"{tarball} is not a readable .tar.gz (corrupt or incomplete download?): {exc}"
        ) from exc


def validate_tarball(tarball: Path) -> VddkTarballInfo:
    """Check the tarball without unpacking it; raise VddkTarballError with the reason."""
    tarball = Path(tarball)
    with _open(tarball) as tar:
        try:
            members = {m.name.lstrip("./"): m for m in tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise VddkTarballError(f"{tarball} is corrupt: {exc}") from exc
        candidates = []
        for name, m in members.items():
            p = PurePosixPath(name)
            if str(p.parent) == LIB_DIR and m.isfile() and _LIB_NAME.match(p.name):
                candidates.append((name, m))
        if not candidates:
            if not any(n.startswith(DISTRIB + "/") or n == DISTRIB for n in members):
                raise VddkTarballError(
                    f"{tarball} does not contain {DISTRIB}/: not a VDDK tarball"
                )
            raise VddkTarballError(
                f"{tarball} has no {LIB_DIR}/libvixDiskLib.so.7.0.3: incomplete VDDK tarball"
            )
        versions = []
        for name, _m in candidates:
            match = _LIB_NAME.match(PurePosixPath(name).name)
            assert match is not None
            versions.append(tuple(int(g) for g in match.groups()[:3]))
        good = [c for c, v in zip(candidates, versions, strict=True) if v == SUPPORTED_VERSION]
        if not good:
            found = ", ".join(".".join(map(str, v)) for v in versions)
            raise VddkTarballError(
                f"{tarball} holds VDDK {found}; snapship needs VDDK 7.0.3 for Linux x86-64"
            )
        name, member = good[0]
        try:
            f = tar.extractfile(member)
            header = f.read(64) if f else b""
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise VddkTarballError(f"{tarball} is corrupt: {exc}") from exc
        _check_elf(header, name)
        version = PurePosixPath(name).name[len("libvixDiskLib.so.") :]
        return VddkTarballInfo(tarball, name, version)


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    root = dest.resolve()
    safe = []
    for m in tar.getmembers():
        name = PurePosixPath(m.name)
        if name.is_absolute() or ".." in name.parts:
            raise VddkTarballError(f"refusing tarball member outside the destination: {m.name}")
        if not (m.isfile() or m.isdir() or m.issym()):
            raise VddkTarballError(f"refusing special tarball member: {m.name}")
        if m.issym():
            target = (root / name.parent / m.linkname).resolve()
            if PurePosixPath(m.linkname).is_absolute() or not target.is_relative_to(root):
                raise VddkTarballError(f"refusing link pointing outside: {m.name} -> {m.linkname}")
        safe.append(m)
    return safe


def install_tarball(tarball: Path, data_dir: Path) -> Path:
    """Validate, unpack into data_dir (replacing an earlier copy); return the library path.

    The returned path is `data_dir/vmware-vix-disklib-distrib/lib64/libvixDiskLib.so.7.0.3`.
    """
    info = validate_tarball(Path(tarball))
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".{DISTRIB}.unpacking"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        with _open(Path(tarball)) as tar:
            members = _safe_members(tar, staging)
            tar.extractall(staging, members=members, filter="data")
        if not (staging / DISTRIB).is_dir():
            raise VddkTarballError(f"{tarball} did not unpack {DISTRIB}/")
        final = data_dir / DISTRIB
        if final.exists():
            shutil.rmtree(final)
        (staging / DISTRIB).rename(final)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise VddkTarballError(f"could not unpack {tarball}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    lib = data_dir / info.library_member
    if not lib.is_file():
        raise VddkTarballError(f"{lib} missing after unpacking {tarball}")
    return lib
