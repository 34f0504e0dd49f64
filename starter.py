"""The `snapship` console script: install, discover, servers, replicate, temporal, worker, demo.

Thin on purpose: the commands live in snapship.cli so they can be tested in-process.
"""

from __future__ import annotations

import sys

from snapship.cli.app import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
