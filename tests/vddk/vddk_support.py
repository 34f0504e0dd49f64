"""Shared helpers for the VDDK tests: stub paths, test credentials, the Env bundle."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox.vcsim.disks import DiskStore, FrozenPoint, VirtualDisk  # noqa: E402
from sandbox.vcsim.vddk_registry import StubRegistry  # noqa: E402
from snapship.vddk.process import VddkLibrary  # noqa: E402
from snapship.vddk.reader import DiskReader  # noqa: E402

STUB_DIR = ROOT / "sandbox" / "vddk_stub"
STUB_LIB = STUB_DIR / "build" / "libvixDiskLib.so.7.0.3"
STUB_TARBALL = STUB_DIR / "build" / "VMware-vix-disklib-7.0.3-stub.x86_64.tar.gz"
THUMB = "3A:4B:5C:6D:7E:8F:90:A1:B2:C3:D4:E5:F6:07:18:29:3A:4B:5C:6D"
HOST, PORT, USER, PASSWORD = "127.0.0.1", 18443, "svc-replicator", "s3cret-pw"


def build_stub() -> None:
    """`make -C sandbox/vddk_stub` (a no-op when up to date)."""
    subprocess.run(["make", "-s", "-C", str(STUB_DIR)], check=True)


def pattern(offset: int, length: int, seed: int = 0) -> bytes:
    """Deterministic, position-dependent bytes (so misplaced reads are caught)."""
    block = 4096
    start = offset - offset % block
    out = bytearray()
    pos = start
    while pos < offset + length:
        out += (f"{seed:04d}:{pos:012d}|" * (block // 18 + 1)).encode()[:block]
        pos += block
    return bytes(out[offset - start : offset - start + length])


@dataclass
class Env:
    """One sandbox state dir with its disk store, stub registry and the loaded library."""

    state: Path
    store: DiskStore
    registry: StubRegistry
    lib: VddkLibrary

    def publish(
        self, disk: VirtualDisk, vm: str = "vm-1", snap: str = "snapshot-1"
    ) -> FrozenPoint:
        point = disk.snapshot()
        self.registry.publish_snapshot(vm, snap, [point.file])
        return point

    def reader(
        self, point: FrozenPoint, vm: str = "vm-1", snap: str = "snapshot-1", **kw: object
    ) -> DiskReader:
        args: dict = dict(
            server=HOST, port=PORT, thumbprint=THUMB, username=USER, password=PASSWORD,
            vm_moref=vm, snapshot_moref=snap, disk_path=point.file,
        )
        args.update(kw)
        return DiskReader(self.lib, **args)
