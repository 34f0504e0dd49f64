"""Shipping permits as data: who may snapshot and ship now, who waits, and for which cap.

Pure logic (no Temporal, no I/O) so the coordinator workflow stays deterministic and the rules can
be unit-tested on their own. The coordinator (workflows/permits.py) keeps the holders and the
waiting queue and asks :func:`plan_grants` what to grant after every change.

Rules:
- A permit covers one VM's run: one slot of the vCenter cap, one disk slot per disk on the VM's
  ESXi host, one per disk on each disk's datastore. It is taken before the VMware snapshot is
  created and returned after it is removed, so the caps count snapshots that exist.
- Order: cutover final syncs, then initial syncs, then incremental runs; oldest request first
  within a class. A request that cannot be granted blocks the resources it waits for, so a later
  request never overtakes it on that host or datastore (no starvation by small requests), while
  requests on other hosts still start.
- A VM with more disks than a host or datastore cap is granted once nothing else uses that host or
  datastore (otherwise it could never run).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, time, timedelta

from snapship.permit_messages import PermitLimits, PermitRequest, Plan, Share


def order_key(req: PermitRequest) -> tuple[int, str, str]:
    return (req.priority, req.requested_at, req.request_key)


def usage(holders: list[PermitRequest]) -> tuple[Counter[str], Counter[str]]:
    hosts: Counter[str] = Counter()
    stores: Counter[str] = Counter()
    for h in holders:
        hosts[h.host] += len(h.disk_datastores)
        stores.update(h.disk_datastores)
    return hosts, stores


def plan_grants(
    limits: PermitLimits,
    holders: list[PermitRequest],
    waiting: list[PermitRequest],
    blackout: str = "",
) -> Plan:
    """Which waiting requests start now, and why each of the others waits."""
    lim = limits.clamped()
    hosts, stores = usage(holders)
    in_use = len(holders)
    blocked_hosts: set[str] = set()
    blocked_stores: set[str] = set()
    grant: list[PermitRequest] = []
    why: dict[str, str] = {}
    for req in sorted(waiting, key=order_key):
        if blackout:
            why[req.request_key] = blackout
            continue
        if in_use >= lim.vcenter_vms:
            why[req.request_key] = (
                f"waiting for a slot on vCenter: {in_use} of {lim.vcenter_vms} VMs shipping"
            )
            continue
        reason, host_full, full_stores = _disk_wait(
            lim, req, hosts, stores, blocked_hosts, blocked_stores
        )
        if reason:
            # Only what it waits for is reserved: later requests may not take it first.
            why[req.request_key] = reason
            if host_full:
                blocked_hosts.add(req.host)
            blocked_stores.update(full_stores)
            continue
        grant.append(req)
        in_use += 1
        hosts[req.host] += len(req.disk_datastores)
        stores.update(req.disk_datastores)
    return Plan(grant, why)


def _disk_wait(
    lim: PermitLimits,
    req: PermitRequest,
    hosts: Counter[str],
    stores: Counter[str],
    blocked_hosts: set[str],
    blocked_stores: set[str],
) -> tuple[str, bool, list[str]]:
    """Why `req` cannot start now ("" if it can), whether its host is what it waits for, and
    which of its datastores are."""
    n = len(req.disk_datastores)
    label = req.host_label or req.host
    if req.host in blocked_hosts:
        return f"waiting for a slot on {label}: an earlier request waits for it", True, []
    if lim.host_disks and hosts[req.host] and hosts[req.host] + n > lim.host_disks:
        used = hosts[req.host]
        reason = f"waiting for a slot on {label}: {used} of {lim.host_disks} disks in use"
        return reason, True, []
    need = Counter(req.disk_datastores)
    for ds, k in sorted(need.items()):
        if ds in blocked_stores:
            return (
                f"waiting for a slot on datastore {ds}: an earlier request waits for it",
                False,
                [ds],
            )
        if lim.datastore_disks and stores[ds] and stores[ds] + k > lim.datastore_disks:
            reason = (
                f"waiting for a slot on datastore {ds}: "
                f"{stores[ds]} of {lim.datastore_disks} disks under snapshot"
            )
            return reason, False, [ds]
    return "", False, []


def shares(limits: PermitLimits, holders: list[PermitRequest]) -> dict[str, Share]:
    """Split the global budgets among holders: Mbit/s by water-filling (a VM capped lower than
    its equal part leaves the rest to the others), EBS requests per second equally."""
    lim = limits.clamped()
    if not holders:
        return {}
    rps = lim.ebs_requests_per_second / len(holders) if lim.ebs_requests_per_second else 0.0
    caps = {h.request_key: _vm_cap(lim, h) for h in holders}
    out = {k: Share(mbps=float(c), requests_per_second=rps) for k, c in caps.items()}
    if not lim.total_mbps:
        return out
    left = float(lim.total_mbps)
    open_keys = sorted(caps, key=lambda k: (caps[k] or float("inf"), k))
    while open_keys:
        even = left / len(open_keys)
        k = open_keys[0]
        if caps[k] and caps[k] < even:
            out[k].mbps = float(caps[k])
            left -= caps[k]
            open_keys.pop(0)
            continue
        for k in open_keys:
            out[k].mbps = even
        break
    return out


def _vm_cap(lim: PermitLimits, h: PermitRequest) -> int:
    caps = [c for c in (h.vm_mbps, lim.vm_mbps) if c > 0]
    return min(caps) if caps else 0


def parse_window(text: str) -> tuple[time, time]:
    """'HH:MM-HH:MM' in UTC; the end may be before the start (a window across midnight)."""
    try:
        start_s, end_s = text.strip().split("-")
        start = time.fromisoformat(start_s.strip())
        end = time.fromisoformat(end_s.strip())
    except ValueError as err:
        raise ValueError(
            f"blackout window {text!r} is not HH:MM-HH:MM (UTC), e.g. 08:00-18:00"
        ) from err
    if start == end:
        raise ValueError(f"blackout window {text!r} is empty")
    return start, end


def blackout_until(now: datetime, windows: list[str]) -> datetime | None:
    """The end of the blackout window `now` falls in, or None. `now` is timezone-aware UTC."""
    latest: datetime | None = None
    for text in windows:
        start, end = parse_window(text)
        for day in (now.date() - timedelta(days=1), now.date()):
            s = datetime.combine(day, start, tzinfo=now.tzinfo)
            e = datetime.combine(day if end > start else day + timedelta(days=1), end,
                                 tzinfo=now.tzinfo)
            if s <= now < e and (latest is None or e > latest):
                latest = e
    return latest
