"""The CPU floor of shipping a GiB on this machine: a 512 KiB block's SHA-256 and its send over
TCP, with no Python above the socket.

Why: the worker's CPU per GiB on the initial-sync benchmark (bench_pipeline.py) includes what no
client code can avoid: hashing each block (EBS requires the SHA-256) and the kernel's work to push
512 KiB through a TCP socket to the endpoint (here local AWS on loopback, where the sender's CPU
also pays the loopback's delivery). This measures both, so a figure from the other benchmarks
can be read as "floor + overhead" on the machine it was taken on: the floor moves a lot from one
kind of machine to another (a virtual machine's kernel sends far more slowly than bare metal).

Per block, interleaved call by call so the two transports see the same machine:
- raw: `socket.sendall` of an HTTP PUT's header and body, then the 201 answer read back;
- libcurl: the same request through snapship's `CurlHttp` (what PutSnapshotBlock uses, less the
  signing and the answer's parsing);
and SHA-256 of a block (hashlib). The receiver is a sink in its own process that reads each body
into one reused buffer and answers 201 at once: a fast far end, so this is a floor, not the
local AWS's own speed.

Prints and writes bench/results/send_floor.json.
Usage: .venv/bin/python bench/bench_send_floor.py [--blocks 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapship.blocks import EBS_BLOCK_SIZE  # noqa: E402
from snapship.ebs.curl_http import CurlHttp  # noqa: E402

GIB = 1024**3
BLOCKS_PER_GIB = GIB // EBS_BLOCK_SIZE
ANSWER = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"


def sink() -> None:
    """The far end, in its own process: reads each request's body into one reused buffer and
    answers 201 at once."""
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


def _serve(conn: socket.socket) -> None:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            chunk = conn.recv(65536)
            if not chunk:
                return
            pending += chunk
        head, _, pending = pending.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        left = length - len(pending)
        pending = b"" if left >= 0 else pending[length:]
        while left > 0:
            left -= conn.recv_into(view[: min(left, len(buf))])
        conn.sendall(ANSWER)


def thread_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


class RawPut:
    """An HTTP/1.1 PUT over a kept-alive socket, answer read to its end."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.head = (
            f"PUT /block HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {EBS_BLOCK_SIZE}\r\n\r\n"
        ).encode()

    def put(self, body: bytes) -> None:
        self.sock.sendall(self.head)
        self.sock.sendall(body)
        got = b""
        while not got.endswith(b"\r\n\r\n"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the sink closed the connection")
            got += chunk


def measure(blocks: int) -> dict[str, object]:
    sink = subprocess.Popen(
        [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        body = os.urandom(EBS_BLOCK_SIZE)
        raw = RawPut(port)
        curl = CurlHttp(verify=False)
        url = f"http://127.0.0.1:{port}/block"
        headers = {"Content-Type": "application/octet-stream"}

        def curl_put(data: bytes) -> None:
            answer = curl.send("PUT", url, headers, data)
            if answer.status_code != 201:
                raise RuntimeError(f"the sink answered {answer.status_code}")

        ways = {"raw_socket": raw.put, "libcurl": curl_put}
        for put in ways.values():  # connections up, buffers grown
            for _ in range(8):
                put(body)
        spent = {name: [0.0, 0.0] for name in ways}
        wall0 = time.perf_counter()
        for _ in range(blocks):
            for name, put in ways.items():
                user0, sys0 = thread_cpu()
                put(body)
                user1, sys1 = thread_cpu()
                spent[name][0] += user1 - user0
                spent[name][1] += sys1 - sys0
        wall = time.perf_counter() - wall0
        user0, sys0 = thread_cpu()
        for _ in range(blocks):
            hashlib.sha256(body).digest()
        user1, sys1 = thread_cpu()
        sha = (user1 - user0 + sys1 - sys0) / blocks * BLOCKS_PER_GIB
    finally:
        sink.kill()
        sink.wait()
    per_gib = BLOCKS_PER_GIB / blocks
    sends = {
        name: {
            "user_s_per_gib": round(u * per_gib, 3),
            "sys_s_per_gib": round(s * per_gib, 3),
            "cpu_s_per_gib": round((u + s) * per_gib, 3),
            "cpu_us_per_block": round((u + s) / blocks * 1e6, 1),
        }
        for name, (u, s) in spent.items()
    }
    raw_send = sends["raw_socket"]["cpu_s_per_gib"]
    return {
        "blocks": blocks,
        "block_bytes": EBS_BLOCK_SIZE,
        "send": sends,
        "sha256_cpu_s_per_gib": round(sha, 3),
        "floor_cpu_s_per_gib": round(raw_send + sha, 3),
        "floor_means": "SHA-256 of every block plus its raw TCP send: CPU no client avoids",
        "wall_seconds": round(wall, 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=1024, help="blocks per transport")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "send_floor.json")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink()
        return 0
    result = measure(args.blocks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
