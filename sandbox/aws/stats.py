"""Request and storage counters served at ``GET /_sandbox/stats``.

Pipeline tests count blocks shipped per snapshot (``put_blocks_by_snapshot``) and check that
deduplication keeps ``stored_bytes`` small; benchmarks read request counts per operation.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

MAX_SECONDS = 3600


class Stats:
    """Thread-safe counters; :meth:`snapshot` returns a JSON-ready copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.errors: Counter[str] = Counter()
            self.put_blocks_by_snapshot: Counter[str] = Counter()
            self.put_bytes = 0
            self.get_bytes = 0
            # Bytes of PutSnapshotBlock received per wall-clock second: the far end's view of
            # a throttle (the newest MAX_SECONDS seconds are kept).
            self.put_bytes_per_second: dict[int, int] = {}

    def request(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    def error(self, operation: str, code: str) -> None:
        with self._lock:
            self.errors[f"{operation}:{code}"] += 1

    def put_block(self, snapshot_id: str, nbytes: int) -> None:
        with self._lock:
            self.put_blocks_by_snapshot[snapshot_id] += 1
            self.put_bytes += nbytes
            second = int(time.time())
            per = self.put_bytes_per_second
            per[second] = per.get(second, 0) + nbytes
            if len(per) > MAX_SECONDS:
                del per[min(per)]

    def got_block(self, nbytes: int) -> None:
        with self._lock:
            self.get_bytes += nbytes

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "errors": dict(self.errors),
                "put_blocks_by_snapshot": dict(self.put_blocks_by_snapshot),
                "put_blocks": sum(self.put_blocks_by_snapshot.values()),
                "put_bytes": self.put_bytes,
                "put_bytes_per_second": {str(k): v for k, v in self.put_bytes_per_second.items()},
                "get_bytes": self.get_bytes,
            }
