"""Local AWS counts PutSnapshotBlock bytes per wall-clock second (the far end of a throttle)."""

from __future__ import annotations

import time

from sandbox.aws.stats import Stats


def test_put_bytes_are_bucketed_per_second() -> None:
    stats = Stats()
    now = int(time.time())
    stats.put_block("snap-1", 512 * 1024)
    stats.put_block("snap-2", 512 * 1024)
    per = stats.snapshot()["put_bytes_per_second"]
    assert sum(per.values()) == 1024 * 1024
    assert all(now <= int(k) <= now + 1 for k in per)
    stats.reset()
    assert stats.snapshot()["put_bytes_per_second"] == {}
