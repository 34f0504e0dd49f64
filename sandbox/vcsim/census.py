"""How many snapshots exist at once, counted where they exist: in the simulated vCenter.

The caps of snapship's permits are about VMware load (VMs snapshotted and read at once, disks per
ESXi host, per datastore), so tests measure them here, at the far end, not in the worker that
believes it respects them. Served at ``GET /admin/stats/snapshots`` (reset with POST
``/admin/stats/snapshots/reset``).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Live:
    vm: str
    host: str
    datastores: list[str]


@dataclass
class SnapshotCensus:
    """Snapshots alive now, and the peaks since the last reset (VMs, disks per host/datastore)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _live: dict[str, _Live] = field(default_factory=dict)
    _peak_vms: int = 0
    _peak_host: Counter[str] = field(default_factory=Counter)
    _peak_datastore: Counter[str] = field(default_factory=Counter)
    _created: int = 0

    def created(self, snapshot: str, vm: str, host: str, datastores: list[str]) -> None:
        with self._lock:
            self._live[snapshot] = _Live(vm, host, list(datastores))
            self._created += 1
            self._update_peaks()

    def removed(self, snapshot: str) -> None:
        with self._lock:
            self._live.pop(snapshot, None)

    def reset(self) -> None:
        with self._lock:
            self._peak_vms = 0
            self._peak_host = Counter()
            self._peak_datastore = Counter()
            self._created = 0
            self._update_peaks()

    def _now(self) -> tuple[set[str], Counter[str], Counter[str]]:
        vms = {s.vm for s in self._live.values()}
        hosts: Counter[str] = Counter()
        stores: Counter[str] = Counter()
        seen: set[str] = set()
        for s in self._live.values():
            if s.vm in seen:  # a VM with two snapshots still reads each disk once
                continue
            seen.add(s.vm)
            hosts[s.host] += len(s.datastores)
            stores.update(s.datastores)
        return vms, hosts, stores

    def _update_peaks(self) -> None:
        vms, hosts, stores = self._now()
        self._peak_vms = max(self._peak_vms, len(vms))
        for h, n in hosts.items():
            self._peak_host[h] = max(self._peak_host[h], n)
        for d, n in stores.items():
            self._peak_datastore[d] = max(self._peak_datastore[d], n)

    def report(self) -> dict[str, Any]:
        with self._lock:
            vms, hosts, stores = self._now()
            return {
                "vms_now": len(vms),
                "peak_vms": self._peak_vms,
                "disks_per_host_now": dict(hosts),
                "peak_disks_per_host": dict(self._peak_host),
                "disks_per_datastore_now": dict(stores),
                "peak_disks_per_datastore": dict(self._peak_datastore),
                "created_since_reset": self._created,
            }
