"""Content-addressed block files on disk, so multi-GiB replicas never sit in RAM.

Each distinct 512 KiB block is one file ``blocks/<hex[:2]>/<hex[2:]>`` named by its SHA-256;
identical blocks (zero blocks above all) are stored once whatever the number of snapshots
holding them. Liveness is decided by the snapshot maps (mark and sweep in :meth:`collect`), with
digests of in-flight writes pinned so a concurrent sweep cannot delete a file a write is about
to reference.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


class BlockStore:
    """Stores and reads block payloads by SHA-256 digest."""

    def __init__(self, root: Path, block_size: int) -> None:
        self.root = root / "blocks"
        self.block_size = block_size
        # A previous run's files are unreachable (snapshot maps live in memory): start clean.
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        for i in range(256):
            (self.root / f"{i:02x}").mkdir()
        self._lock = threading.Lock()
        self._present: set[bytes] = set()
        self._pins: Counter[bytes] = Counter()
        self._tmp_seq = 0
        self._root_str = str(self.root)

    def _path(self, digest: bytes) -> str:
        h = digest.hex()
        return f"{self._root_str}/{h[:2]}/{h[2:]}"

    @property
    def stored_blocks(self) -> int:
        return len(self._present)

    @property
    def stored_bytes(self) -> int:
        return len(self._present) * self.block_size

    def pin_and_store(self, digest: bytes, data: bytes) -> None:
        """Make sure ``data`` is on disk under ``digest`` and pin it until :meth:`unpin`."""
        with self._lock:
            self._pins[digest] += 1
            if digest in self._present:
                return
            self._tmp_seq += 1
            seq = self._tmp_seq
        path = self._path(digest)
        tmp = f"{path}.{seq}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            self.unpin(digest)
            raise
        with self._lock:
            self._present.add(digest)

    def unpin(self, digest: bytes) -> None:
        with self._lock:
            self._pins[digest] -= 1
            if self._pins[digest] <= 0:
                del self._pins[digest]

    def read(self, digest: bytes) -> bytes:
        with open(self._path(digest), "rb") as fh:
            return fh.read()

    def collect(self, live: Iterable[bytes]) -> int:
        """Delete files whose digest is neither in ``live`` nor pinned; returns files removed."""
        live_set = set(live)
        removed = 0
        with self._lock:
            dead = [d for d in self._present if d not in live_set and d not in self._pins]
            for digest in dead:
                self._present.discard(digest)
                try:
                    os.unlink(self._path(digest))
                except FileNotFoundError:
                    pass
                removed += 1
        return removed
