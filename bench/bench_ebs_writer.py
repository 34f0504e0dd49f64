"""Benchmark: initial sync through the EBS snapshot writer against the local AWS endpoint.

Measures, for the client side only (the endpoint runs in a child process so its CPU is not
counted against the writer): throughput in MB/s, CPU seconds per GiB shipped (getrusage, with the
synthetic data generator's own cost measured separately and subtracted), and peak RSS. Writes
bench/results/ebs_writer.json and prints the figures.

    .venv/bin/python bench/bench_ebs_writer.py [--gib 1] [--in-flight 48] [--latency-ms 0]

Over plain HTTP botocore SHA-256-signs each body (over HTTPS, as against AWS, PutSnapshotBlock
is sent UNSIGNED-PAYLOAD), so the CPU figure here includes one extra hash per block.

Data: every block is unique random data (an 8-byte index + a slice of a random pool), so no block
is all-zero and nothing is skipped; the endpoint verifies every SHA-256 and the LINEAR aggregate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.aws.admin_client import AdminClient  # noqa: E402
from snapship.blocks import EBS_BLOCK_SIZE, GIB  # noqa: E402
from snapship.ebs.client import AwsConnection, AwsCredentials, make_clients  # noqa: E402
from snapship.ebs.writer import EbsSnapshotWriter, WriterSettings, client_token  # noqa: E402

POOL_BYTES = 32 * 1024 * 1024
BENCH_KEY_ID = "AKIALOCALBENCH000001"  # the local endpoint accepts any key pair
BENCH_SECRET = "local-bench-secret"


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def blocks(count: int, pool: bytes) -> Iterator[tuple[int, bytes]]:
    slots = (len(pool) - EBS_BLOCK_SIZE) // 4096
    for i in range(count):
        off = (i * 7919 % slots) * 4096
        yield i, i.to_bytes(8, "little") + pool[off + 8 : off + EBS_BLOCK_SIZE]


def start_endpoint(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.aws",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--complete-delay",
            "0.05",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "endpoint" not in line:
        proc.kill()
        raise RuntimeError(f"local AWS did not start: {line!r}")
    return proc, line.split()[-1]


def run(gib: float, in_flight: int, latency_ms: float) -> dict[str, object]:
    count = int(gib * GIB) // EBS_BLOCK_SIZE
    pool = os.urandom(POOL_BYTES)

    # cost of producing the data alone (what a VDDK read would replace)
    t0 = cpu_seconds()
    for _ in blocks(count, pool):
        pass
    generator_cpu = cpu_seconds() - t0

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="bench-ebs-") as tmp:
        proc, endpoint = start_endpoint(Path(tmp))
        try:
            admin = AdminClient(endpoint)
            if latency_ms:
                admin.set_faults(latency_ms=latency_ms)
            conn = AwsConnection(
                region="us-east-1",
                endpoint_url=endpoint,
                credentials=lambda: AwsCredentials(BENCH_KEY_ID, BENCH_SECRET),
            )
            clients = make_clients(conn, ebs_concurrency=in_flight)
            writer = EbsSnapshotWriter(
                clients.ebs, clients.ec2, WriterSettings(max_in_flight=in_flight, wait_poll_s=0.1)
            )
            rss_before = peak_rss_mib()
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            up = writer.start(
                max(1, int(-(-gib // 1))), None, client_token("bench", str(time.time()))
            )
            cp = writer.put_blocks(up, blocks(count, pool))
            writer.complete(up)
            wall_put = time.perf_counter() - wall0
            writer.wait_completed(up.snapshot_id, timeout_s=600)
            wall = time.perf_counter() - wall0
            cpu = cpu_seconds() - cpu0
            stats = admin.stats()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    shipped = cp.counters.bytes_sent
    assert stats["put_blocks"] == count == cp.counters.blocks_sent
    return {
        "gib": gib,
        "blocks": count,
        "max_in_flight": in_flight,
        "latency_ms": latency_ms,
        "wall_seconds_put_and_complete": round(wall_put, 3),
        "wall_seconds_until_completed": round(wall, 3),
        "throughput_mb_s": round(shipped / 1e6 / wall_put, 1),
        "throughput_mib_s": round(shipped / 2**20 / wall_put, 1),
        "client_cpu_seconds": round(cpu, 3),
        "client_cpu_seconds_per_gib": round(cpu / (shipped / GIB), 3),
        "generator_cpu_seconds": round(generator_cpu, 3),
        "writer_cpu_seconds_per_gib": round((cpu - generator_cpu) / (shipped / GIB), 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_before_upload_mib": round(rss_before, 1),
        "endpoint_cpu_seconds_total": round(server_cpu, 2),
        "retries": cp.counters.retries,
        "requests": stats["requests"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--in-flight", type=int, default=48)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument(
        "--latency-scaling",
        action="store_true",
        help="also ship 0.25 GiB at 100 ms added latency with 8 and 48 blocks in flight",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ebs_writer.json")
    args = p.parse_args()
    result = run(args.gib, args.in_flight, args.latency_ms)
    if args.latency_scaling:
        result["latency_scaling"] = [
            {k: v for k, v in run(0.25, n, 100.0).items() if k != "requests"} for n in (8, 48)
        ]
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "note": "client and local endpoint share this machine; endpoint in a child process",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
