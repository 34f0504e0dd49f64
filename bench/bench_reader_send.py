"""The shipping data path alone: a stub VDDK disk -> reader process -> PutSnapshotBlock -> a fast
sink, two ways, CPU per GiB of the worker (this process) and of the reader process:

  reader-sends: the reader sends each block itself from its shared memory (DiskReader.send_blocks;
                this process signs and settles) -- what the Shipper does with an EbsBlockClient;
  worker-sends: the reader hashes, this process copies each block out and sends it (DiskReader.
                blocks() into the writer's threads) -- what it did before, and still does for a
                plain boto3 client.

Both go through EbsSnapshotWriter.put_blocks and the real EbsBlockClient (SigV4 signing, libcurl),
so the difference is where the bytes travel. The far end is bench_send_floor's sink (reads each
body into one buffer, answers 201), not local AWS: this measures our side, without the far end's
own CPU on the same cores or Temporal's. Read the pipeline's figure (bench_pipeline.py) against
it: what it adds is the run's fixed steps and the worker's background.

Prints and writes bench/results/reader_send.json.
Usage: .venv/bin/python bench/bench_reader_send.py [--size-mib 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_vddk import STUB, THUMB, _proc_cpu, _self_cpu, stub_disk  # noqa: E402
from snapship.blocks import EBS_BLOCK_SIZE  # noqa: E402
from snapship.ebs.client import AwsConnection, AwsCredentials, make_clients  # noqa: E402
from snapship.ebs.writer import EbsSnapshotWriter, WriterSettings  # noqa: E402
from snapship.vddk.reader import DiskReader  # noqa: E402

GIB = 1 << 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--in-flight", type=int, default=48, help="the writer's window (blocks)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reader_send.json")
    ap.add_argument(
        "--profile-reader", type=Path,
        help="py-spy raw profile (GIL holders, 500 Hz) of the reader while it sends; "
        "summarise with bench/profile_summary.py",
    )
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(STUB)], check=True)
    size = args.size_mib * 1024 * 1024
    blocks = range(size // EBS_BLOCK_SIZE)
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bench_send_floor.py"), "--sink"],
        stdout=subprocess.PIPE, text=True,
    )
    results: dict[str, dict[str, float]] = {}
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        clients = make_clients(AwsConnection(
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            credentials=lambda: AwsCredentials("AKIAEXAMPLE", os.urandom(16).hex()),
        ), ebs_concurrency=args.in_flight)
        settings = WriterSettings(max_in_flight=args.in_flight)
        with tempfile.TemporaryDirectory(prefix="bench-reader-send-") as tmp:
            store, disk_path, lib = stub_disk(Path(tmp), size)

            def reader(send_window: int) -> DiskReader:
                return DiskReader(lib, server="127.0.0.1", port=443, thumbprint=THUMB,
                                  username="bench", password="pw", vm_moref="vm-1",
                                  snapshot_moref="snapshot-1", disk_path=disk_path,
                                  send_window=send_window)

            def one(name: str, ship: Callable[[EbsSnapshotWriter, DiskReader], None],
                    window: int) -> None:
                with reader(window) as r:
                    writer = EbsSnapshotWriter(clients.ebs, settings=settings)
                    spy = None
                    if args.profile_reader and name == "reader_sends":
                        spy = subprocess.Popen(
                            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                             str(r.reader_pid), "--gil", "-r", "500", "-f", "raw", "-o",
                             str(args.profile_reader)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )
                        time.sleep(1)  # attached before the first block
                    cpu0, rcpu0 = _self_cpu(), _proc_cpu(r.reader_pid)
                    t0 = time.perf_counter()
                    ship(writer, r)
                    secs = time.perf_counter() - t0
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)  # py-spy writes its file on interrupt
                        spy.wait(60)
                    m = {
                        "mb_per_s": size / secs / 1e6,
                        "worker_cpu_s_per_gib": (_self_cpu() - cpu0) * GIB / size,
                        "reader_cpu_s_per_gib": (_proc_cpu(r.reader_pid) - rcpu0) * GIB / size,
                    }
                m["total_cpu_s_per_gib"] = m["worker_cpu_s_per_gib"] + m["reader_cpu_s_per_gib"]
                best = results.get(name)
                if best is None or m["total_cpu_s_per_gib"] < best["total_cpu_s_per_gib"]:
                    results[name] = m

            def reader_sends(writer: EbsSnapshotWriter, r: DiskReader) -> None:
                up = writer.resume("snap-bench", 0, None)
                send = clients.ebs.block_send_options()
                writer.put_blocks(up, r.send_blocks(blocks, writer.send_plan(up), send))

            def worker_sends(writer: EbsSnapshotWriter, r: DiskReader) -> None:
                up = writer.resume("snap-bench", 0, None)
                writer.put_blocks(up, r.blocks(blocks))

            for _ in range(args.rounds):  # alternating, so both see the same machine
                one("reader_sends", reader_sends, args.in_flight)
                one("worker_sends", worker_sends, 0)
            store.close()
    finally:
        sink.kill()
    report = {
        "benchmark": "reader_send",
        "disk_mib": args.size_mib,
        "in_flight": args.in_flight,
        "rounds_best_of": args.rounds,
        "units": "MB/s (1e6 bytes/s); CPU seconds per GiB (process user + system)",
        "results": {k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for k, r in results.items():
        print(f"{k:>13}: {r['mb_per_s']:7.1f} MB/s  worker {r['worker_cpu_s_per_gib']:.2f}"
              f" + reader {r['reader_cpu_s_per_gib']:.2f}"
              f" = {r['total_cpu_s_per_gib']:.2f} CPU-s/GiB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
