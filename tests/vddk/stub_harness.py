"""Drive the stub libvixDiskLib directly, in a process of its own (a ctypes harness).

The pytest process never loads the library (like the worker); a test that needs raw VDDK calls
runs this script with `run(code, ...)`: the code runs in the harness's main thread with `b` (the
binding module), `lib` (a VixDiskLib, InitEx done unless init=False), `connect()` and `Errors`;
it stores a JSON-friendly `result`. `LIB_PATH` and `CONFIG` name the library and config file.
LD_LIBRARY_PATH is set from `ld_path` at process start, as the worker sets it for its readers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STUB_BUILD = ROOT / "sandbox" / "vddk_stub" / "build"
STUB_LIB = STUB_BUILD / "libvixDiskLib.so.7.0.3"

PRELUDE = """
import ctypes, json, os, sys, threading
sys.path.insert(0, {here!r})
from vddk_support import HOST, PORT, THUMB, USER, PASSWORD
from snapship.vddk import binding as b
from snapship.vddk.errors import VddkError
LIB_PATH, CONFIG = {lib!r}, {config!r}
lib = b.VixDiskLib(LIB_PATH, CONFIG) if {init!r} else None

def code_of(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except VddkError as exc:
        return exc.code
    return 0

def connect(**kw):
    args = dict(server=HOST, port=PORT, thumbprint=THUMB, username=USER, password=PASSWORD,
                vm_moref="vm-1", snapshot_moref="snapshot-1")
    args.update(kw)
    return lib.connect(**args)

result = None
"""


def run(
    code: str,
    state: Path | None,
    *,
    ld_path: Path | None = STUB_BUILD,
    init: bool = True,
    config: Path | None = None,
    lib: Path = STUB_LIB,
    timeout: float = 60,
) -> Any:
    """Run `code` in a fresh harness process; returns its `result` (raises on a crash)."""
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    if ld_path is not None:
        env["LD_LIBRARY_PATH"] = str(ld_path)
    if state is not None:
        env["SNAPSHIP_STUB_VDDK_STATE"] = str(state)
    prelude = PRELUDE.format(
        here=str(HERE), lib=str(lib), config=str(config) if config else None, init=init
    )
    script = prelude + code + "\nprint('RESULT ' + json.dumps(result))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"harness failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
