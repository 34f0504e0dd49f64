"""Python client for the unsigned ``/_sandbox/`` admin endpoint (stdlib only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class AdminError(RuntimeError):
    """The admin endpoint refused a request (bad setting, unknown route)."""


class AdminClient:
    """Fault settings, stats, the virtual clock and snapshot debug views of one local AWS."""

    def __init__(self, endpoint_url: str, timeout: float = 10.0) -> None:
        self.base = endpoint_url.rstrip("/") + "/_sandbox/"
        self.timeout = timeout

    def _call(self, method: str, path: str, doc: Any = None) -> Any:
        data = json.dumps(doc).encode() if doc is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise AdminError(f"{method} {path}: {err.code} {err.read().decode()}") from None

    def health(self) -> bool:
        return bool(self._call("GET", "health").get("ok"))

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "faults"))

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Patch fault settings, e.g. ``set_faults(throttle_fraction=0.2, latency_ms=5)``."""
        return dict(self._call("POST", "faults", settings))

    def reset_faults(self) -> dict[str, Any]:
        return dict(self._call("DELETE", "faults"))

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))

    def reset_stats(self) -> None:
        self._call("POST", "stats/reset", {})

    def clock(self) -> dict[str, float]:
        return dict(self._call("GET", "clock"))

    def set_clock_speed(self, speed: float) -> dict[str, float]:
        return dict(self._call("POST", "clock", {"speed": speed}))

    def advance_clock(self, seconds: float) -> dict[str, float]:
        return dict(self._call("POST", "clock", {"advance_seconds": seconds}))

    def sweep(self) -> int:
        return int(self._call("POST", "sweep", {})["removed_files"])

    def snapshots(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "snapshots"))

    def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"snapshots/{snapshot_id}"))
