"""A VM's share of the shared budgets, enforced where its blocks leave (each PutSnapshotBlock).

The permit coordinator splits the global Mbit/s and EBS request budgets among the VMs holding a
permit (snapship.permits.shares); the ship activity asks for its share every few seconds and sets
it here, so a changed limit or a VM joining or leaving takes effect within that period on every
worker. The limiter wraps the EBS client (`ThrottledEbs`), so the writer's hot path is unchanged;
a block a VDDK reader sends is held when its PUT is signed, before it goes to the reader.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from snapship.blocks import EBS_BLOCK_SIZE

BITS_PER_BYTE = 8
MAX_WAIT_SLICE_S = 0.25
"""Waits are sliced so a lowered rate or a cancel is noticed quickly."""


class TokenBucket:
    """`rate` units per second with a burst of `burst_s` seconds' worth (at least one unit);
    rate 0 means unlimited. Thread-safe: the writer's threads share one bucket."""

    def __init__(
        self, rate: float = 0.0, burst_s: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._burst_s = burst_s
        self._rate = 0.0
        self._tokens = 0.0
        self._stamp = clock()
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._refill()
            self._rate = max(0.0, rate)
            self._tokens = min(self._tokens, self._capacity(1.0))

    def _capacity(self, units: float) -> float:
        return max(units, self._rate * self._burst_s)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate:
            self._tokens += (now - self._stamp) * self._rate
        self._stamp = now

    def take(
        self,
        units: float,
        sleep: Callable[[float], None] = time.sleep,
        cancel: threading.Event | None = None,
    ) -> float:
        """Block until `units` may go, or `cancel` is set; returns the seconds waited. The debt
        model (tokens may go negative) keeps a large unit from waiting forever when the burst
        is smaller."""
        waited = 0.0
        while True:
            if cancel is not None and cancel.is_set():
                return waited
            with self._lock:
                if not self._rate:
                    return waited
                self._refill()
                self._tokens = min(self._tokens, self._capacity(units))
                if self._tokens >= 0:
                    self._tokens -= units
                    return waited
                # At least a millisecond: a float remainder must not spin.
                pause = max(0.001, min(MAX_WAIT_SLICE_S, -self._tokens / self._rate))
            sleep(pause)
            waited += pause


class Throttle:
    """Bytes and requests per second of one VM's shipping. Once `cancel` is set nothing waits
    (the run is stopping: what it still sends is not worth a budget's delay)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, cancel: threading.Event | None = None
    ) -> None:
        self.bytes = TokenBucket(clock=clock)
        self.requests = TokenBucket(clock=clock)
        self.cancel = cancel

    def _sleep(self, seconds: float) -> None:
        if self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def set_share(self, mbps: float, requests_per_second: float) -> None:
        self.bytes.set_rate(mbps * 1_000_000 / BITS_PER_BYTE)
        self.requests.set_rate(requests_per_second)

    @property
    def pacing(self) -> bool:
        """Whether a budget is set (else nothing waits)."""
        return bool(self.bytes.rate or self.requests.rate)

    def before_request(self, nbytes: int) -> None:
        self.requests.take(1, self._sleep, self.cancel)
        self.bytes.take(nbytes, self._sleep, self.cancel)


class ThrottledEbs:
    """The EBS client with PutSnapshotBlock held to the throttle; every other call passes."""

    def __init__(self, ebs: Any, throttle: Throttle) -> None:
        self._ebs = ebs
        self._throttle = throttle

    def put_snapshot_block(self, **kwargs: Any) -> Any:
        data = kwargs.get("BlockData", b"")
        self._throttle.before_request(len(data) if isinstance(data, bytes | bytearray) else 0)
        return self._ebs.put_snapshot_block(**kwargs)

    def sign_put(self, snapshot_id: str, index: int, digest: bytes) -> Any:
        """A PUT that a VDDK reader will send: held to the throttle here, before it is signed
        (so the signature is fresh when the wait ends)."""
        self._throttle.before_request(EBS_BLOCK_SIZE)
        signed = self._ebs.sign_put(snapshot_id, index, digest)
        return signed._replace(paced=self._throttle.pacing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ebs, name)
