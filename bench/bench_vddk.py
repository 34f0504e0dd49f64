"""Read + hash throughput through a VDDK reader process (stub library) vs doing it in-process.

Builds the stub if needed, writes a sandbox disk (default 512 MiB, every grain allocated),
snapshots it, then produces every 512 KiB block with its SHA-256 two ways:
  direct: os.pread of 2 MiB from the frozen layer's .data file + hashlib in this process
  reader: snapship.vddk.DiskReader.blocks() -> reader process (ReadAsync into shared memory,
          SHA-256 there) -> one copy out of the shared slot in this process
Prints MB/s (10^6 bytes/s), this process's CPU seconds per GiB (what the worker pays) and the
reader's, and writes bench/results/vddk.json.
Usage: .venv/bin/python bench/bench_vddk.py [--size-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.disks import DiskStore  # noqa: E402
from sandbox.vcsim.vddk_registry import StubRegistry  # noqa: E402
from snapship.blocks import EBS_BLOCK_SIZE  # noqa: E402
from snapship.vddk.process import VddkLibrary  # noqa: E402
from snapship.vddk.reader import DiskReader  # noqa: E402

CHUNK = 2 * 1024 * 1024
GIB = 1 << 30
STUB = ROOT / "sandbox" / "vddk_stub"
THUMB = "11:22:33:44:55:66:77:88:99:00:AA:BB:CC:DD:EE:FF:11:22:33:44"


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(fn: Callable[[], bytes], size: int, reader_pid: int | None) -> dict[str, float]:
    cpu0, rcpu0 = _self_cpu(), _proc_cpu(reader_pid) if reader_pid else 0.0
    t0 = time.perf_counter()
    fn()
    secs = time.perf_counter() - t0
    cpu = _self_cpu() - cpu0
    out = {"mb_per_s": size / secs / 1e6, "caller_cpu_s_per_gib": cpu * GIB / size}
    if reader_pid:
        out["reader_cpu_s_per_gib"] = (_proc_cpu(reader_pid) - rcpu0) * GIB / size
    return out


def stub_disk(state: Path, size: int) -> tuple[DiskStore, str, VddkLibrary]:
    """A sandbox disk of `size` bytes, every grain written, snapshotted and published for the
    stub (user "bench", password "pw"): its store, the snapshot's file and the library."""
    os.environ["SNAPSHIP_STUB_VDDK_STATE"] = str(state)
    store = DiskStore(state)
    reg = StubRegistry(state)
    reg.set_endpoint("127.0.0.1", 443, THUMB)
    reg.set_users({"bench": "pw"})
    disk = store.create_disk("ds1", "vm-1", "vm-1", size)
    block = os.urandom(CHUNK)
    for off in range(0, size, CHUNK):
        disk.write(off, off.to_bytes(8, "little") + block[8:])
    point = disk.snapshot()
    reg.publish_snapshot("vm-1", "snapshot-1", [point.file])
    return store, point.file, VddkLibrary(STUB / "build" / "libvixDiskLib.so.7.0.3",
                                          state / "vddk-work")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vddk.json")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(STUB)], check=True)
    size = args.size_mib * 1024 * 1024
    blocks = size // EBS_BLOCK_SIZE

    with tempfile.TemporaryDirectory(prefix="bench-vddk-") as tmp:
        state = Path(tmp)
        store, disk_path, lib = stub_disk(state, size)
        data_file = state / "datastores" / "ds1" / "vm-1" / "vm-1.data"
        fd = os.open(data_file, os.O_RDONLY)
        results: dict[str, dict[str, float]] = {}
        try:
            with DiskReader(lib, server="127.0.0.1", port=443, thumbprint=THUMB,
                            username="bench", password="pw", vm_moref="vm-1",
                            snapshot_moref="snapshot-1", disk_path=disk_path) as reader:

                def via_reader() -> bytes:
                    h = hashlib.sha256()
                    for b in reader.blocks(range(blocks)):
                        h.update(b.digest)
                    return h.digest()

                def direct() -> bytes:
                    h = hashlib.sha256()
                    for off in range(0, size, CHUNK):
                        data = memoryview(os.pread(fd, CHUNK, off))
                        for i in range(0, len(data), EBS_BLOCK_SIZE):
                            h.update(hashlib.sha256(data[i : i + EBS_BLOCK_SIZE]).digest())
                    return h.digest()

                assert via_reader() == direct(), "reader and direct disagree"  # warms the cache
                for _ in range(args.rounds):
                    for name, fn, pid in (("direct", direct, None),
                                          ("reader", via_reader, reader.reader_pid)):
                        m = _measure(fn, size, pid)
                        best = results.get(name)
                        if best is None or m["mb_per_s"] > best["mb_per_s"]:
                            results[name] = m
        finally:
            os.close(fd)
            store.close()

    report = {
        "benchmark": "vddk_read_and_hash",
        "disk_mib": args.size_mib,
        "read_size_bytes": CHUNK,
        "rounds_best_of": args.rounds,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "units": "MB/s (1e6 bytes per second), CPU seconds per GiB; page cache warm",
        "results": {k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for k, r in results.items():
        extra = ""
        if "reader_cpu_s_per_gib" in r:
            extra = f"  reader CPU {r['reader_cpu_s_per_gib']:.2f} s/GiB"
        print(f"{k:>7}: {r['mb_per_s']:8.1f} MB/s  "
              f"caller CPU {r['caller_cpu_s_per_gib']:.2f} s/GiB{extra}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
