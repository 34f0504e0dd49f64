"""Fault injection for the EBS direct endpoint: throttling, 5xx, latency, eventual consistency.

Settings change at run time through ``POST /_sandbox/faults`` (see :mod:`sandbox.aws.admin`) so
a test or benchmark can make the service misbehave the way AWS does under load: a fraction of
requests throttled or failing with 5xx, added latency, snapshots that "do not exist" for a while
after StartSnapshot, a pending-snapshot quota, a clock that runs faster for Timeout rules.

Fractions are spread evenly rather than drawn independently (error diffusion with a phase taken
from ``seed``): any n consecutive eligible requests see floor(n*f) or ceil(n*f) faults, so a test
that sets ``throttle_fraction=0.3`` and makes six calls is sure to meet a throttle.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.aws.errors import ERROR_STATUS, EbsError, ErrorSpec, internal, throttled

EBS_OPERATIONS = (
    "StartSnapshot",
    "PutSnapshotBlock",
    "CompleteSnapshot",
    "GetSnapshotBlock",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
)


@dataclass
class FailNext:
    """Fail the next ``count`` calls of ``operation`` with ``code`` (deterministic faults)."""

    operation: str
    code: str
    reason: str | None = None
    count: int = 1
    status: int | None = None


@dataclass
class FaultSettings:
    """Every knob of the local endpoint's misbehaviour; defaults mean a healthy service."""

    throttle_fraction: float = 0.0
    throttle_reason: str = "ACCOUNT_THROTTLED"
    server_error_fraction: float = 0.0
    server_error_status: int = 500  # 500: InternalServerException, 503: ServiceUnavailable
    not_found_after_start_seconds: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    pending_quota: int = 100
    pending_quota_error: str = "ConcurrentLimitExceededException"
    complete_delay_seconds: float = 0.5
    clock_speed: float = 1.0
    operations: list[str] = field(default_factory=list)  # empty: faults apply to all EBS ops
    access_denied_operations: list[str] = field(default_factory=list)
    put_rate_limit_per_snapshot: float = 0.0  # blocks/s; 0 means unlimited
    list_max_page: int = 0  # cap on List* page size; 0 means MaxResults decides
    empty_page_fraction: float = 0.0  # List* answers an empty page with a NextToken
    fail_next: list[FailNext] = field(default_factory=list)
    respond_after_seconds: dict[str, float] = field(default_factory=dict)
    """EBS operation -> seconds: the call takes effect at once, its answer is held this long
    (the window where a client died after AWS acted but before it heard back)."""
    slow_actions: dict[str, float] = field(default_factory=dict)
    """``service:Action`` of a moto-served call (``ec2:DescribeSnapshots``) -> seconds of delay
    before it is answered."""
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(FaultSettings)}


def settings_from_dict(base: FaultSettings, patch: dict[str, Any]) -> FaultSettings:
    """``base`` with the keys of ``patch`` replaced; unknown keys or bad values raise ValueError."""
    unknown = set(patch) - _FIELDS
    if unknown:
        raise ValueError(f"unknown fault settings: {sorted(unknown)}")
    merged = base.to_dict()
    merged.update(patch)
    merged["fail_next"] = [
        f if isinstance(f, FailNext) else FailNext(**f) for f in merged["fail_next"]
    ]
    new = FaultSettings(**merged)
    for name in ("throttle_fraction", "server_error_fraction", "empty_page_fraction"):
        value = getattr(new, name)
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be within 0..1")
    if new.clock_speed <= 0:
        raise ValueError("clock_speed must be positive")
    if new.pending_quota < 0:
        raise ValueError("pending_quota must be >= 0")
    if new.server_error_status not in (500, 503):
        raise ValueError("server_error_status must be 500 or 503")
    if new.pending_quota_error not in ERROR_STATUS:
        raise ValueError(f"unknown error code {new.pending_quota_error}")
    for f in new.fail_next:
        if f.code not in ERROR_STATUS:
            raise ValueError(f"unknown error code {f.code}")
    ops = [*new.operations, *new.access_denied_operations, *(f.operation for f in new.fail_next)]
    for op in [*ops, *new.respond_after_seconds]:
        if op not in EBS_OPERATIONS:
            raise ValueError(f"unknown EBS operation {op}")
    for action, seconds in [*new.respond_after_seconds.items(), *new.slow_actions.items()]:
        if float(seconds) < 0:
            raise ValueError(f"negative delay for {action}")
    return new


class FaultInjector:
    """Decides, per request, whether to delay it or answer with an injected error."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self.settings = settings or FaultSettings()
        self._rng = random.Random(self.settings.seed)
        self._buckets: dict[str, tuple[float, float]] = {}  # snapshot -> (tokens, last time)
        self._acc: dict[str, float] = {}
        self._new_phases()
        self.injected: dict[str, int] = {}

    def _new_phases(self) -> None:
        self._acc = {k: self._rng.random() for k in ("throttle", "server", "empty")}

    def _due(self, kind: str, fraction: float) -> bool:
        """Error diffusion: true for an evenly spread ``fraction`` of calls."""
        if fraction <= 0:
            return False
        self._acc[kind] += fraction
        if self._acc[kind] >= 1.0:
            self._acc[kind] -= 1.0
            return True
        return False

    def update(self, patch: dict[str, Any]) -> FaultSettings:
        with self._lock:
            self.settings = settings_from_dict(self.settings, patch)
            if "seed" in patch:
                self._rng = random.Random(self.settings.seed)
                self._new_phases()
            return self.settings

    def reset(self) -> FaultSettings:
        with self._lock:
            self.settings = FaultSettings()
            self._rng = random.Random()
            self._new_phases()
            self._buckets.clear()
            return self.settings

    def _count(self, code: str) -> None:
        self.injected[code] = self.injected.get(code, 0) + 1

    def before(self, operation: str) -> None:
        """Sleep for injected latency, then raise an injected error if one is due."""
        s = self.settings
        applies = not s.operations or operation in s.operations
        delay = 0.0
        error: EbsError | None = None
        with self._lock:
            for rule in s.fail_next:
                if rule.operation == operation and rule.count > 0:
                    rule.count -= 1
                    error = ErrorSpec(rule.code, rule.reason, rule.status).make()
                    break
            if error is None and operation in s.access_denied_operations:
                error = EbsError("AccessDeniedException", "Access denied (injected).",
                                 "UNAUTHORIZED_ACCOUNT")
            if error is None and applies:
                if self._due("throttle", s.throttle_fraction):
                    error = throttled(s.throttle_reason)
                elif self._due("server", s.server_error_fraction):
                    if s.server_error_status == 503:
                        error = EbsError("ServiceUnavailableException",
                                         "Service unavailable (injected).")
                    else:
                        error = internal("An internal error has occurred (injected).")
            if applies and (s.latency_ms or s.latency_jitter_ms):
                delay = (s.latency_ms + self._rng.random() * s.latency_jitter_ms) / 1000.0
            if error is not None:
                self._count(error.code)
        if delay > 0:
            time.sleep(delay)
        if error is not None:
            raise error

    def after(self, operation: str) -> None:
        """Hold an EBS answer that already took effect (``respond_after_seconds``)."""
        hold = float(self.settings.respond_after_seconds.get(operation, 0.0))
        if hold > 0:
            time.sleep(hold)

    def before_moto(self, action: str) -> None:
        """Delay a moto-served call (``slow_actions``), e.g. ``ec2:DescribeSnapshots``."""
        delay = float(self.settings.slow_actions.get(action, 0.0))
        if delay > 0:
            time.sleep(delay)

    def check_put_rate(self, snapshot_id: str) -> None:
        """Per-snapshot PutSnapshotBlock rate limit (token bucket, burst of one second)."""
        rate = self.settings.put_rate_limit_per_snapshot
        if rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(snapshot_id, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[snapshot_id] = (tokens, now)
                self._count("RequestThrottledException")
                raise throttled("RESOURCE_LEVEL_THROTTLE")
            self._buckets[snapshot_id] = (tokens - 1.0, now)

    def empty_page(self) -> bool:
        s = self.settings
        if not s.empty_page_fraction:
            return False
        with self._lock:
            return self._due("empty", s.empty_page_fraction)
