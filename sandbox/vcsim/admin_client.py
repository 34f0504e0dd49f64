"""Python client of the simulator's admin API (see README.md for the routes)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any


class AdminClientError(RuntimeError):
    """The admin API answered with an error status."""


class AdminClient:
    """Thin JSON client: one method per admin action."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AdminClientError(f"{e.code}: {e.read().decode(errors='replace')}") from None

    # inventory and state
    def health(self) -> bool:
        return bool(self._call("GET", "/health")["ok"])

    def info(self) -> dict[str, Any]:
        return dict(self._call("GET", "/info"))

    def vms(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/vms"))

    def vm(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/vms/{name}"))

    def history(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/history"))

    def snapshot_census(self) -> dict[str, Any]:
        """Snapshots alive now and peaks since the last reset: VMs, disks per host/datastore."""
        return dict(self._call("GET", "/stats/snapshots"))

    def reset_snapshot_census(self) -> None:
        self._call("POST", "/stats/snapshots/reset", {})

    def configure(self, **settings: Any) -> None:
        self._call("POST", "/config", settings)

    # guest I/O
    def write(self, vm: str, offset: int, data: bytes | None = None, *, disk: int = 0,
              length: int | None = None, random_seed: int | None = None,
              pattern: bytes | None = None, zero: bool = False) -> int:
        body: dict[str, Any] = {"disk": disk, "offset": offset}
        if data is not None:
            body["data_b64"] = base64.b64encode(data).decode()
        else:
            body["length"] = length
            if random_seed is not None:
                body["random_seed"] = random_seed
            elif pattern is not None:
                body["pattern"] = pattern.hex()
            elif zero:
                body["zero"] = True
        return int(self._call("POST", f"/vms/{vm}/write", body)["written"])

    def read(self, vm: str, offset: int, length: int, *, disk: int = 0,
             file: str | None = None) -> bytes:
        body: dict[str, Any] = {"disk": disk, "offset": offset, "length": length}
        if file:
            body["file"] = file
        return base64.b64decode(self._call("POST", f"/vms/{vm}/read", body)["data_b64"])

    # power, migration, disks, snapshots
    def power(self, vm: str, state: str) -> str:
        """state: "on", "off" or "hard-off" (a hard power-off starts a new CBT epoch)."""
        return str(self._call("POST", f"/vms/{vm}/power", {"state": state})["power_state"])

    def vmotion(self, vm: str, host: str, delay: float = 0) -> Any:
        return self._call("POST", f"/vms/{vm}/migrate", {"host": host, "delay": delay})

    def storage_vmotion(self, vm: str, datastore: str, delay: float = 0) -> Any:
        return self._call("POST", f"/vms/{vm}/relocate", {"datastore": datastore,
                                                          "delay": delay})

    def add_disk(self, vm: str, capacity_kb: int, mode: str = "persistent") -> int:
        return int(self._call("POST", f"/vms/{vm}/disks",
                              {"op": "add", "capacity_kb": capacity_kb, "mode": mode})["key"])

    def remove_disk(self, vm: str, key: int) -> None:
        self._call("POST", f"/vms/{vm}/disks", {"op": "remove", "key": key})

    def extend_disk(self, vm: str, key: int, capacity_kb: int) -> None:
        self._call("POST", f"/vms/{vm}/disks", {"op": "extend", "key": key,
                                                "capacity_kb": capacity_kb})

    def create_snapshot(self, vm: str, name: str) -> dict[str, Any]:
        """A foreign (user's) snapshot, taken behind the client's back."""
        return dict(self._call("POST", f"/vms/{vm}/snapshot", {"name": name}))

    def remove_snapshot(self, vm: str, moref: str) -> None:
        self._call("POST", f"/vms/{vm}/remove-snapshot", {"moref": moref})

    def cbt(self, vm: str, enabled: bool | None = None, new_epoch: bool = False) -> Any:
        body: dict[str, Any] = {"new_epoch": new_epoch}
        if enabled is not None:
            body["enabled"] = enabled
        return self._call("POST", f"/vms/{vm}/cbt", body)

    def set_flags(self, vm: str, consolidation_needed: bool | None = None,
                  tools: str | None = None, cbt_stuck: bool | None = None) -> Any:
        body: dict[str, Any] = {}
        if cbt_stuck is not None:
            body["cbt_stuck"] = cbt_stuck
        if consolidation_needed is not None:
            body["consolidation_needed"] = consolidation_needed
        if tools is not None:
            body["tools"] = tools
        return self._call("POST", f"/vms/{vm}/flags", body)

    # faults
    def fail_tasks(self, kind: str, count: int = 1, fault: str = "SystemError",
                   message: str = "injected fault") -> None:
        self._call("POST", "/faults/fail-tasks", {"kind": kind, "count": count,
                                                  "fault": fault, "message": message})

    def delay_tasks(self, kind: str, seconds: float) -> None:
        self._call("POST", "/faults/delay-tasks", {"kind": kind, "seconds": seconds})

    def delay_calls(self, method: str, seconds: float) -> None:
        """Every SOAP call of `method` (e.g. RetrievePropertiesEx) answers `seconds` late."""
        self._call("POST", "/faults/delay-calls", {"method": method, "seconds": seconds})

    def expire_sessions(self) -> int:
        return int(self._call("POST", "/faults/expire-sessions")["expired"])

    def drop_connections(self, count: int = 1) -> None:
        self._call("POST", "/faults/drop-connections", {"count": count})

    def qcda_filefault(self, count: int = 1, device_key: int | None = None) -> None:
        """The next `count` QueryChangedDiskAreas (of disk `device_key` only, if given) answer
        FileFault, as vCenter does when the change-tracking file cannot be read."""
        self._call("POST", "/faults/qcda-filefault", {"count": count, "device_key": device_key})

    def missing_methods(self, *methods: str) -> None:
        """Answer these SOAP methods with MethodNotFound (none: every method is back)."""
        self._call("POST", "/faults/missing-methods", {"methods": list(methods)})

    def clear_faults(self) -> None:
        self._call("POST", "/faults/clear")
