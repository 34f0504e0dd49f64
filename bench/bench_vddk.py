"""Read throughput through the VDDK binding (stub library) vs reading the files directly.

Builds the stub if needed, writes a sandbox disk (default 512 MiB, every grain allocated),
snapshots it, then reads the whole snapshot in 2 MiB requests with 1 and 4 threads:
  direct:  os.pread from the frozen layer's .data file
  binding: snapship.vddk.DiskReader -> ctypes -> stub libvixDiskLib -> pread
Prints MB/s (10^6 bytes/s) and the ratio, and writes bench/results/vddk.json.
Usage: .venv/bin/python bench/bench_vddk.py [--size-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.vcsim.disks import DiskStore  # noqa: E402
from sandbox.vcsim.vddk_registry import StubRegistry  # noqa: E402
from snapship.vddk.binding import VixDiskLib  # noqa: E402
from snapship.vddk.reader import DiskReader  # noqa: E402

CHUNK = 2 * 1024 * 1024
STUB = ROOT / "sandbox" / "vddk_stub"
THUMB = "11:22:33:44:55:66:77:88:99:00:AA:BB:CC:DD:EE:FF:11:22:33:44"


def _parallel(
    threads: int, size: int, read_at: Callable[[int, int], int], passes: int = 1
) -> float:
    """Read [0, size) `passes` times in CHUNK requests spread over `threads`; returns seconds."""
    offsets = list(range(0, size, CHUNK)) * passes
    lock = threading.Lock()
    total = [0]

    def work() -> None:
        while True:
            with lock:
                if not offsets:
                    return
                off = offsets.pop()
            n = read_at(off, min(CHUNK, size - off))
            with lock:
                total[0] += n

    start = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - start
    assert total[0] == size * passes, (total[0], size * passes)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--passes", type=int, default=4, help="whole-disk reads per measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vddk.json")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(STUB)], check=True)
    size = args.size_mib * 1024 * 1024

    with tempfile.TemporaryDirectory(prefix="bench-vddk-") as tmp:
        state = Path(tmp)
        os.environ["SNAPSHIP_STUB_VDDK_STATE"] = str(state)
        store = DiskStore(state)
        reg = StubRegistry(state)
        reg.set_endpoint("127.0.0.1", 443, THUMB)
        reg.set_users({"bench": "pw"})
        disk = store.create_disk("ds1", "vm-1", "vm-1", size)
        block = os.urandom(CHUNK)
        t0 = time.perf_counter()
        for off in range(0, size, CHUNK):
            disk.write(off, off.to_bytes(8, "little") + block[8:])
        fill_s = time.perf_counter() - t0
        point = disk.snapshot()
        reg.publish_snapshot("vm-1", "snapshot-1", [point.file])
        data_file = state / "datastores" / "ds1" / "vm-1" / "vm-1.data"
        lib = VixDiskLib.load(STUB / "build" / "libvixDiskLib.so.7.0.3")

        # correctness first: same bytes both ways
        fd = os.open(data_file, os.O_RDONLY)
        results: dict[str, dict[str, float]] = {}
        try:
            with DiskReader(lib, server="127.0.0.1", port=443, thumbprint=THUMB,
                            username="bench", password="pw", vm_moref="vm-1",
                            snapshot_moref="snapshot-1", disk_path=point.file,
                            max_handles=4) as reader:
                for off in (0, size // 2, size - CHUNK):
                    assert reader.read(off, CHUNK) == os.pread(fd, CHUNK, off)
                bufs = threading.local()

                def via_binding(off: int, n: int) -> int:
                    buf = getattr(bufs, "b", None)
                    if buf is None or len(buf) != n:
                        buf = bufs.b = bytearray(n)
                    return reader.readinto(off, buf)

                def direct(off: int, n: int) -> int:
                    buf = getattr(bufs, "d", None)
                    if buf is None or len(buf) != n:
                        buf = bufs.d = bytearray(n)
                    return os.preadv(fd, [buf], off)

                _parallel(1, size, direct)  # warm the page cache
                for threads in (1, 4):
                    # interleave the two ways so both see the same machine load; keep the best
                    secs = {"direct": float("inf"), "binding": float("inf")}
                    for _ in range(args.rounds):
                        for name, fn in (("direct", direct), ("binding", via_binding)):
                            t = _parallel(threads, size, fn, args.passes)
                            secs[name] = min(secs[name], t)
                    best = {k: size * args.passes / v / 1e6 for k, v in secs.items()}
                    best["ratio_binding_over_direct"] = best["binding"] / best["direct"]
                    results[f"{threads}_thread" + ("s" if threads > 1 else "")] = best
                sample = hashlib.sha256(reader.read(0, CHUNK)).hexdigest()[:16]
        finally:
            os.close(fd)
            store.close()

    report = {
        "benchmark": "vddk_read_throughput",
        "disk_mib": args.size_mib,
        "read_size_bytes": CHUNK,
        "rounds_best_of": args.rounds,
        "passes_per_measurement": args.passes,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "fill_seconds": round(fill_s, 3),
        "units": "MB/s (1e6 bytes per second), page cache warm",
        "results": {k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "sample_sha256_prefix": sample,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for k, r in results.items():
        print(f"{k:>10}: direct {r['direct']:9.1f} MB/s  binding {r['binding']:9.1f} MB/s  "
              f"ratio {r['ratio_binding_over_direct']:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
