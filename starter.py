"""The `snapship` console script: install, discover, servers, replicate, temporal, worker, demo.

Thin on purpose: the commands live in snapship.cli so they can be tested in-process.
"""

from __future__ import annotations

import os
import sys

from snapship.cli.app import main as _main


def main(argv: list[str] | None = None) -> int:
    """Run one command. Called without `argv` (the console script), the process ends with
    `os._exit` once output is flushed: the Temporal client's Rust threads can abort CPython's
    finalization of a short-lived process ("PyGILState_Release ... finalizing", temporalio
    sdk-python#300), which would turn a finished command into exit code -6. With `argv` (a
    caller in the same process) the exit code is simply returned.
    """
    if argv is not None:
        return _main(argv)
    try:
        code = _main(None)
    except SystemExit as exc:  # argparse --help / --version / usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
