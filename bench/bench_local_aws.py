"""How fast one boto3 client can push blocks into the local AWS endpoint.

The pipeline benchmarks need the sandbox's EBS direct endpoint not to be their bottleneck; this
measures PutSnapshotBlock throughput (MB/s and blocks/s) from one client with N threads sharing
one boto3 client, then the read-back rate (ListSnapshotBlocks + GetSnapshotBlock). By default the
server runs in its own process (``python -m sandbox.aws``), as the demo runs it, so client and
server do not share a GIL; ``--in-process`` uses ``start_local_aws`` instead.

    .venv/bin/python bench/bench_local_aws.py --threads 16 --blocks 1500

Writes ``bench/results/local_aws.json``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

BLOCK = 524_288
RESULTS = ROOT / "bench" / "results" / "local_aws.json"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_subprocess(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.aws", "--port", "0", "--data-dir", str(data_dir),
         "--complete-delay", "0.05"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("local-aws endpoint "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-local-aws-"))
    proc = None
    handle = None
    server_pid = os.getpid()
    if args.in_process:
        from sandbox.aws.testing import start_local_aws

        handle = start_local_aws(tmp, settings={"complete_delay_seconds": 0.05})
        endpoint = handle.endpoint_url
    else:
        proc, endpoint = _start_subprocess(tmp)
        server_pid = proc.pid
    try:
        cfg = Config(max_pool_connections=args.threads * 2,
                     retries={"total_max_attempts": 3, "mode": "standard"},
                     connect_timeout=5, read_timeout=60)
        kw: dict[str, Any] = dict(endpoint_url=endpoint, region_name="us-east-1",
                                  aws_access_key_id="AKIABENCH", aws_secret_access_key="x",
                                  config=cfg)
        make: Any = boto3.client
        ebs = make("ebs", **kw)
        ec2 = make("ec2", **kw)
        volume_gib = max(1, -(-args.blocks // 2048))
        sid = ebs.start_snapshot(VolumeSize=volume_gib)["SnapshotId"]
        bases = [os.urandom(BLOCK) for _ in range(64)]
        digests: dict[int, bytes] = {}

        def put(i: int) -> None:
            data = bytearray(bases[i % 64])
            data[:8] = i.to_bytes(8, "little")  # every block distinct: no dedup shortcut
            blob = bytes(data)
            digest = hashlib.sha256(blob).digest()
            digests[i] = digest
            ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=blob,
                                   DataLength=BLOCK, Checksum=base64.b64encode(digest).decode(),
                                   ChecksumAlgorithm="SHA256")

        with ThreadPoolExecutor(args.threads) as ex:  # warm connections up
            list(ex.map(put, range(args.threads)))
        load_before = os.getloadavg()[0]
        cpu0 = _cpu_seconds(server_pid)
        client0 = time.process_time()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as ex:
            list(ex.map(put, range(args.threads, args.blocks)))
        put_s = time.perf_counter() - t0
        put_cpu = _cpu_seconds(server_pid) - cpu0
        client_cpu = time.process_time() - client0
        measured = args.blocks - args.threads
        linear = base64.b64encode(
            hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()).decode()
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(digests), Checksum=linear,
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        while ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] != "completed":
            time.sleep(0.05)

        t1 = time.perf_counter()
        listed: list[dict[str, Any]] = []
        token = None
        while True:
            page = ebs.list_snapshot_blocks(SnapshotId=sid,
                                            **({"NextToken": token} if token else {}))
            listed.extend(page["Blocks"])
            token = page.get("NextToken")
            if not token:
                break

        def get(entry: dict[str, Any]) -> None:
            got = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=entry["BlockIndex"],
                                         BlockToken=entry["BlockToken"])
            data = got["BlockData"].read()
            if hashlib.sha256(data).digest() != digests[entry["BlockIndex"]]:
                raise AssertionError(f"block {entry['BlockIndex']} read back wrong")

        with ThreadPoolExecutor(args.threads) as ex:
            list(ex.map(get, listed))
        get_s = time.perf_counter() - t1
        return {
            "threads": args.threads,
            "blocks": measured,
            "server": "in-process" if args.in_process else "subprocess",
            "put_seconds": round(put_s, 3),
            "put_blocks_per_s": round(measured / put_s, 1),
            "put_MB_per_s": round(measured * BLOCK / put_s / 1e6, 1),
            "put_MiB_per_s": round(measured * BLOCK / put_s / 2**20, 1),
            "server_cpu_ms_per_put": round(put_cpu / measured * 1000, 3)
            if not args.in_process else None,
            "client_cpu_ms_per_put": round(client_cpu / measured * 1000, 3)
            if not args.in_process else None,
            "read_blocks": len(listed),
            "read_blocks_per_s": round(len(listed) / get_s, 1),
            "read_MB_per_s": round(len(listed) * BLOCK / get_s / 1e6, 1),
            "load_average_1m_at_start": round(load_before, 2),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        }
    finally:
        if handle is not None:
            handle.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--blocks", type=int, default=1500, help="blocks to write (512 KiB each)")
    p.add_argument("--in-process", action="store_true", help="server in this process")
    args = p.parse_args(argv)
    result = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"PutSnapshotBlock: {result['put_MB_per_s']} MB/s ({result['put_MiB_per_s']} MiB/s), "
        f"{result['put_blocks_per_s']} blocks/s with {args.threads} threads, "
        f"{result['blocks']} blocks, server {result['server']}"
        + (f", CPU per block: server {result['server_cpu_ms_per_put']} ms, "
           f"client {result['client_cpu_ms_per_put']} ms"
           if result["server_cpu_ms_per_put"] is not None else "")
    )
    print(f"read back: {result['read_MB_per_s']} MB/s, {result['read_blocks_per_s']} blocks/s; "
          f"load average at start {result['load_average_1m_at_start']} on "
          f"{result['cpu_count']} CPUs")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
