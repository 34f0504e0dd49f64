"""The stub in another process reads a snapshot while the simulator writes and consolidates."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading

from vddk_support import HOST, PASSWORD, PORT, ROOT, STUB_LIB, THUMB, USER, Env, pattern

MIB = 1024 * 1024

CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    import tempfile
    from snapship.vddk.process import VddkLibrary
    from snapship.vddk.reader import DiskReader
    lib_path, host, port, thumb, user, path = sys.argv[1:7]
    lib = VddkLibrary(Path(lib_path), Path(tempfile.mkdtemp()))
    with DiskReader(lib, server=host, port=int(port), thumbprint=thumb, username=user,
                    password=sys.stdin.readline().rstrip("\\n"), vm_moref="vm-1",
                    snapshot_moref="snapshot-2", disk_path=path) as r:
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(3):
            h = hashlib.sha256()
            for off in range(0, r.capacity, 2 * 1024 * 1024):
                h.update(r.read(off, min(2 * 1024 * 1024, r.capacity - off)))
            print(h.hexdigest(), flush=True)
    """
)


def test_other_process_reads_frozen_data_during_writes_and_consolidation(env: Env) -> None:
    cap = 16 * MIB
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    disk.write(0, pattern(0, cap, 11))
    older = disk.snapshot()
    disk.write(3 * MIB + 5, b"second" * 50_000)
    point = env.publish(disk, snap="snapshot-2")
    expected = hashlib.sha256(disk.read(0, cap, point.file)).hexdigest()

    child_env = dict(os.environ, SNAPSHIP_STUB_VDDK_STATE=str(env.state),
                     PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(STUB_LIB), HOST, str(PORT), THUMB, USER, point.file],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(PASSWORD + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "ready"

    stop = threading.Event()

    def guest() -> None:
        i = 0
        while not stop.is_set():
            disk.write((i * 999_983) % (cap - 70_000), os.urandom(70_000))
            i += 1

    g = threading.Thread(target=guest)
    g.start()
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        # consolidate the older snapshot while the child reads: the published layer is merged
        # into it in place, and the child's open layer files are deleted under it
        disk.remove_snapshot(older.file)
        out, _ = proc.communicate(timeout=120)
    finally:
        stop.set()
        g.join()
    assert proc.returncode == 0
    assert out.split() == [expected] * 3
    assert hashlib.sha256(disk.read(0, cap, disk.resolve(point.file))).hexdigest() == expected
