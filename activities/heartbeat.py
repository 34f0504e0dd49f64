"""Heartbeat a synchronous activity from a helper thread while a blocking call runs.

Why: a control activity that blocks on vCenter (a snapshot task) or EBS (a snapshot sealing)
cannot heartbeat from its own thread, and without heartbeats Temporal only notices a dead worker
when the start-to-close timeout ends (up to hours). With `heartbeating()` around the body, the
activity beats every few seconds, so a killed worker's attempt is retried within its heartbeat
timeout; a heartbeat is also how the server's cancellation reaches a running attempt, which
`Heartbeats.cancelled` then reports (the SDK additionally raises in the activity thread).

Usable from launch jobs or any other sync activity: it needs only the activity context.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from temporalio import activity

BEAT_EVERY_S = 3.0
"""Well inside every heartbeat timeout the workflows set (see workflows/activity_options.py)."""


class Heartbeats:
    """The running helper: `details` may be swapped to report progress; `cancelled` is set once
    Temporal asked this attempt to stop."""

    def __init__(self, details: Callable[[], Any] | None, every_s: float) -> None:
        self.details = details
        self.every_s = every_s
        self.cancelled = threading.Event()
        self._stop = threading.Event()

    def beat(self) -> None:
        if self.details is None:
            activity.heartbeat()
        else:
            activity.heartbeat(self.details())
        if activity.is_cancelled():
            self.cancelled.set()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except Exception:  # a heartbeat that cannot be sent must not kill the activity
                pass


@contextmanager
def heartbeating(
    details: Callable[[], Any] | None = None, every_s: float = BEAT_EVERY_S
) -> Iterator[Heartbeats]:
    """Beat at once and then every `every_s` seconds until the block ends."""
    hb = Heartbeats(details, every_s)
    hb.beat()
    ctx = contextvars.copy_context()  # the activity context lives in a context variable
    thread = threading.Thread(target=ctx.run, args=(hb.run,), name="heartbeat", daemon=True)
    thread.start()
    try:
        yield hb
    finally:
        hb._stop.set()
        thread.join(timeout=every_s + 1)


F = TypeVar("F", bound=Callable[..., Any])


def heartbeats_while_running(fn: F) -> F:
    """Decorator for a sync activity: its whole body runs inside `heartbeating()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with heartbeating():
            return fn(*args, **kwargs)

    return cast(F, wrapper)
