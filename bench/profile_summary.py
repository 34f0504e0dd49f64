"""Summarise a py-spy raw profile (`py-spy record -f raw`): the functions where samples were
taken (self) and the functions on the stack (inclusive), as percentages of all samples.

The benchmarks record with `--gil`, so a sample is a moment some thread held the GIL: Python-level
CPU. Work that releases the GIL (SHA-256 in hashlib, socket I/O) shows as CPU seconds in the
benchmark's figures but not here.

Usage: .venv/bin/python bench/profile_summary.py profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"(?P<fn>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file").split("site-packages/")[-1].split("/lib/python3.11/")[-1]
    return f"{m.group('fn')} {path}"


def summarise(path: Path, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    lines = [f"{total} samples", "-- self"]
    lines += [f"{100 * v / total:5.1f}% {k}" for k, v in own.most_common(top)]
    lines.append("-- inclusive")
    lines += [f"{100 * v / total:5.1f}% {k}" for k, v in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
