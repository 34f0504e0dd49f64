"""A worker host's process tree from /proc: the worker and every process it started (VDDK
readers), for CPU and RSS figures that cover "all of the worker's processes"."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(pid: int) -> list[int]:
    """pid and every live descendant (from the parent links in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_split(pid: int) -> dict[str, float]:
    """CPU seconds of pid itself and of its children (reaped and live), user and system apart:
    which process a cost lands in (the worker's Python, the readers' hashing and reads)."""
    out = {"worker_user": 0.0, "worker_sys": 0.0, "children_user": 0.0, "children_sys": 0.0}
    for p in tree(pid):
        try:
            f = _stat(p)
        except OSError:
            continue
        if p == pid:
            out["worker_user"] += int(f[11])
            out["worker_sys"] += int(f[12])
            out["children_user"] += int(f[13])
            out["children_sys"] += int(f[14])
        else:
            out["children_user"] += int(f[11])
            out["children_sys"] += int(f[12])
    return {k: v / TICKS for k, v in out.items()}


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU of pid (with its reaped children) and of its live descendants."""
    return sum(cpu_split(pid).values())


def status_kib(pid: int, field: str) -> int:
    """A /proc/pid/status figure in KiB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    return sum(status_kib(p, "VmRSS") for p in tree(pid))
