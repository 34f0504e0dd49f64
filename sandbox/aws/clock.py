"""A clock that can run faster than real time or jump ahead, so Timeout rules are testable.

Snapshot timeouts (10 to 4,320 minutes) and token expiries are measured on this clock; the
admin endpoint sets its speed or advances it. Real-time delays (completion sealing, injected
latency, the not-found window) use ``time.monotonic`` directly.
"""

from __future__ import annotations

import threading
import time


class ScaledClock:
    """Wall-clock seconds since the epoch, scaled by ``speed`` and shifted by ``advance``."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._anchor_real = time.time()
        self._anchor_virtual = self._anchor_real
        self._speed = speed

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        with self._lock:
            return self._anchor_virtual + (time.time() - self._anchor_real) * self._speed

    def set_speed(self, speed: float) -> None:
        """Change the rate from now on; virtual time stays continuous."""
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        with self._lock:
            real = time.time()
            self._anchor_virtual += (real - self._anchor_real) * self._speed
            self._anchor_real = real
            self._speed = speed

    def advance(self, seconds: float) -> None:
        """Jump virtual time forward (never backward)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._anchor_virtual += seconds
