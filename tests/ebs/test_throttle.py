"""The shipping side's limiter: a rate holds over time, changes at once, 0 means unlimited."""

from __future__ import annotations

import threading
import time
from typing import Any

from snapship.ebs.curl_options import SignedPut
from snapship.ebs.throttle import Throttle, ThrottledEbs, TokenBucket

BLOCK = 512 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_rate_holds_over_a_long_run_and_a_change_applies_at_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10 * BLOCK, clock=clock)
    for _ in range(200):
        bucket.take(BLOCK, sleep=clock.sleep)
    assert 19.5 <= clock.now <= 20.1  # 200 blocks at 10 blocks/s
    start = clock.now
    bucket.set_rate(2 * BLOCK)
    for _ in range(20):
        bucket.take(BLOCK, sleep=clock.sleep)
    assert 9.5 <= clock.now - start <= 10.6


def test_zero_is_unlimited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0, clock=clock)
    for _ in range(1000):
        assert bucket.take(BLOCK, sleep=clock.sleep) == 0
    assert clock.now == 0


def test_throttled_client_limits_only_puts_across_threads() -> None:
    calls: list[str] = []

    class Ebs:
        def put_snapshot_block(self, **kw: Any) -> dict[str, str]:
            calls.append("put")
            return {}

        def start_snapshot(self, **kw: Any) -> dict[str, str]:
            calls.append("start")
            return {"SnapshotId": "snap-1"}

    throttle = Throttle()
    throttle.set_share(mbps=8 * 20 * BLOCK / 1_000_000, requests_per_second=0)  # 20 blocks/s
    ebs = ThrottledEbs(Ebs(), throttle)
    assert ebs.start_snapshot(VolumeSize=1)["SnapshotId"] == "snap-1"
    began = time.monotonic()

    def put(n: int) -> None:
        for _ in range(n):
            ebs.put_snapshot_block(BlockData=b"\0" * BLOCK)

    threads = [threading.Thread(target=put, args=(5,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    assert calls.count("put") == 20
    assert took >= 0.9  # 20 blocks at 20 blocks/s after the first: about 1 s, never faster


def test_a_cancelled_ship_waits_for_no_budget() -> None:
    cancel = threading.Event()
    throttle = Throttle(cancel=cancel)
    throttle.set_share(mbps=0.01, requests_per_second=0)  # 1,250 bytes a second
    throttle.before_request(4096)  # the first goes at once, into debt
    threading.Timer(0.3, cancel.set).start()
    began = time.monotonic()
    throttle.before_request(4096)  # would wait seconds for the debt
    assert time.monotonic() - began < 1.5


def test_a_signed_put_says_whether_a_budget_paced_it() -> None:
    class Signer:
        def sign_put(self, snapshot_id: str, index: int, digest: bytes) -> SignedPut:
            return SignedPut(f"http://ebs/{snapshot_id}/{index}", [])

    throttle = Throttle()
    ebs = ThrottledEbs(Signer(), throttle)
    assert not ebs.sign_put("snap-1", 0, b"d").paced
    throttle.set_share(mbps=100, requests_per_second=0)
    assert ebs.sign_put("snap-1", 1, b"d").paced
