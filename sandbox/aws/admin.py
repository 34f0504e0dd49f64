"""Unsigned admin endpoint under ``/_sandbox/`` for tests, benchmarks and the demo.

``GET|POST|DELETE /_sandbox/faults`` read, patch or reset :class:`FaultSettings`;
``GET /_sandbox/stats`` (``POST /_sandbox/stats/reset``) serve :class:`Stats` plus storage
figures; ``GET|POST /_sandbox/clock`` read the virtual clock, set its speed or advance it;
``GET /_sandbox/snapshots[/<id>]`` describe the EBS-direct snapshots; ``GET /_sandbox/health``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from sandbox.aws.faults import FaultInjector
from sandbox.aws.snapshots import EbsDirectBackend
from sandbox.aws.stats import Stats

StartResponse = Callable[..., Any]
PREFIX = "/_sandbox/"


class AdminApi:
    """JSON in, JSON out; errors are ``{"error": ...}`` with status 400 or 404."""

    def __init__(self, backend: EbsDirectBackend, faults: FaultInjector, stats: Stats) -> None:
        self.backend = backend
        self.faults = faults
        self.stats = stats

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")[len(PREFIX):].strip("/")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length > 0 else b""
            doc = json.loads(raw) if raw else {}
            status, out = self._handle(method, path, doc)
        except (ValueError, TypeError) as exc:
            status, out = 400, {"error": str(exc)}
        payload = json.dumps(out, default=str).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def _handle(self, method: str, path: str, doc: Any) -> tuple[int, Any]:
        if path == "health":
            return 200, {"ok": True}
        if path == "faults":
            if method == "GET":
                return 200, self.faults.settings.to_dict()
            if method == "DELETE":
                settings = self.faults.reset()
            elif method == "POST":
                if not isinstance(doc, dict):
                    raise ValueError("fault settings must be a JSON object")
                settings = self.faults.update(doc)
            else:
                return 405, {"error": "use GET, POST or DELETE"}
            self.backend.clock.set_speed(settings.clock_speed)
            return 200, settings.to_dict()
        if path == "faults/reset" and method == "POST":
            settings = self.faults.reset()
            self.backend.clock.set_speed(settings.clock_speed)
            return 200, settings.to_dict()
        if path == "stats":
            self.backend.sweep()
            out = self.stats.snapshot()
            store = self.backend.store
            out["stored_blocks"] = store.stored_blocks
            out["stored_bytes"] = store.stored_bytes
            out["snapshots_by_status"] = _count_status(self.backend.describe())
            out["faults_injected"] = dict(self.faults.injected)
            return 200, out
        if path == "stats/reset" and method == "POST":
            self.stats.reset()
            self.faults.injected.clear()
            return 200, {"ok": True}
        if path == "clock":
            clock = self.backend.clock
            if method == "POST":
                if "speed" in doc:
                    clock.set_speed(float(doc["speed"]))
                    self.faults.update({"clock_speed": float(doc["speed"])})
                if "advance_seconds" in doc:
                    clock.advance(float(doc["advance_seconds"]))
            return 200, {"now": clock.now(), "speed": clock.speed}
        if path == "sweep" and method == "POST":
            return 200, {"removed_files": self.backend.sweep()}
        if path == "snapshots":
            return 200, self.backend.describe()
        if path.startswith("snapshots/"):
            found = self.backend.describe(path.split("/", 1)[1])
            if not found:
                return 404, {"error": "no such snapshot"}
            return 200, found[0]
        return 404, {"error": f"no admin route {method} /{PREFIX.strip('/')}/{path}"}


def _count_status(described: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in described:
        counts[d["Status"]] = counts.get(d["Status"], 0) + 1
    return counts
