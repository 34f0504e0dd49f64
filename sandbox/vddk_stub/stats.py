"""What the stub libvixDiskLib reports about itself: open disk handles per reader process.

The stub writes `$STATE/vddk/handles/<pid>` (the count) at every Open and Close and removes it at
zero. A process killed with handles open leaves its file behind, so only live pids count: the
figure is what VDDK on a host would see open right now.
"""

from __future__ import annotations

import os
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def handles_by_process(state_dir: Path) -> dict[int, int]:
    """{pid: open handles} for the live processes that hold some."""
    out: dict[int, int] = {}
    folder = Path(state_dir) / "vddk" / "handles"
    if not folder.is_dir():
        return out
    for f in folder.iterdir():
        if not f.name.isdigit():
            continue
        try:
            count = int(f.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if count > 0 and _alive(int(f.name)):
            out[int(f.name)] = count
    return out


def open_handles(state_dir: Path) -> int:
    """Disk handles open right now across every live process using the stub."""
    return sum(handles_by_process(state_dir).values())
