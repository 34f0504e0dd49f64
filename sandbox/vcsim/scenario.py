"""Scenario files: the inventory, users and knobs a simulator starts from.

A scenario is YAML (or the equivalent dict). See README.md in this folder for the schema; in
short::

    vcenter: {version: "8.0", consolidation_seconds: 0.2, max_changed_extents: 2000}
    roles: {Backup: [System.View, System.Read, VirtualMachine.State.CreateSnapshot, ...]}
    users:
      - {name: administrator@vsphere.local, password: pw, permissions: [{entity: /, role: Admin}]}
    datacenters:
      - name: dc1
        datastores: [{name: ds1, type: VMFS, capacity_gib: 1024}]
        networks: [VM Network]
        clusters: [{name: cl1, hosts: [esx1, esx2]}]
        vms:
          - {name: web-01, host: esx1, datastore: ds1, disks: [{capacity_mib: 32}], cbt: true}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ADMIN = "administrator@vsphere.local"


def load_scenario(source: Path | str | dict[str, Any]) -> dict[str, Any]:
    """Read a scenario from a YAML file or take a dict; returns a private deep copy."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    data = yaml.safe_load(Path(source).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"scenario {source} is not a mapping")
    return data


def capacity_bytes(spec: dict[str, Any]) -> int:
    """Disk capacity from capacity_kb / capacity_mib / capacity_gib / capacity_bytes."""
    if "capacity_bytes" in spec:
        value = int(spec["capacity_bytes"])
    elif "capacity_kb" in spec:
        value = int(spec["capacity_kb"]) * 1024
    elif "capacity_mib" in spec:
        value = int(float(spec["capacity_mib"]) * 1024) * 1024
    elif "capacity_gib" in spec:
        value = int(float(spec["capacity_gib"]) * 1024 * 1024) * 1024
    else:
        value = 16 * 1024 * 1024
    if value <= 0 or value % 1024:
        raise ValueError(f"disk capacity {value} must be a positive whole number of KiB")
    return value


def generate_scenario(n_vms: int, hosts: int = 16, datastores: int = 8,
                      disks_per_vm: int = 2, password: str = "sandbox-password") -> dict[str, Any]:
    """A large, uniform scenario (e.g. 10,000 VMs) for inventory scale tests.

    Disks are metadata-only until something touches their data: the simulator creates the
    backing files lazily.
    """
    vms = []
    for i in range(n_vms):
        vms.append({
            "name": f"vm-{i:05d}",
            "host": f"esx{i % hosts:02d}",
            "datastore": f"ds{i % datastores:02d}",
            "folder": f"batch{i // 1000:02d}",
            "cpus": 1 + i % 4,
            "memory_mb": 1024 * (1 + i % 8),
            "power": "poweredOn" if i % 5 else "poweredOff",
            "cbt": i % 3 != 0,
            "guest_id": "ubuntu64Guest" if i % 2 else "windows2019srv_64Guest",
            "disks": [{"capacity_gib": 16 * (d + 1)} for d in range(disks_per_vm)],
            "nics": [{"network": "VM Network"}],
        })
    return {
        "vcenter": {"version": "8.0"},
        "users": [{"name": DEFAULT_ADMIN, "password": password,
                   "permissions": [{"entity": "/", "role": "Admin"}]}],
        "datacenters": [{
            "name": "dc-scale",
            "datastores": [{"name": f"ds{d:02d}", "type": "VMFS", "capacity_gib": 65536}
                           for d in range(datastores)],
            "networks": ["VM Network"],
            "clusters": [{"name": "cluster-a", "hosts": [f"esx{h:02d}" for h in range(hosts)]}],
            "folders": [f"batch{b:02d}" for b in range((n_vms + 999) // 1000)],
            "vms": vms,
        }],
    }


_KEYS: dict[str, set[str]] = {
    "top": {"vcenter", "roles", "users", "datacenters"},
    "vcenter": {"version", "instance_uuid", "consolidation_seconds", "max_changed_extents",
                "record_snapshot_content", "default_page_size", "session_timeout_s"},
    "user": {"name", "password", "permissions"},
    "permission": {"entity", "role", "privileges", "propagate"},
    "datacenter": {"name", "datastores", "networks", "clusters", "hosts", "folders", "vms"},
    "datastore": {"name", "type", "capacity_gib", "free_gib"},
    "cluster": {"name", "hosts"},
    "vm": {"name", "folder", "host", "datastore", "guest_id", "guest_full_name", "firmware",
           "cpus", "memory_mb", "hardware_version", "power", "template", "snapship_client",
           "instance_uuid", "bios_uuid", "tools", "ip", "hostname", "cbt", "cbt_not_active",
           "snapshots", "nics", "disks"},
    "disk": {"capacity_bytes", "capacity_kb", "capacity_mib", "capacity_gib", "backing", "mode",
             "thin", "datastore", "guest_path", "guest_free_mib", "uuid"},
    "nic": {"network", "mac", "type"},
}


def _check(kind: str, spec: Any, where: str) -> None:
    if not isinstance(spec, dict):
        raise ValueError(f"scenario {where}: expected a mapping, got {spec!r}")
    unknown = set(spec) - _KEYS[kind]
    if unknown:
        raise ValueError(f"scenario {where}: unknown key(s) {sorted(unknown)}; "
                         f"known: {sorted(_KEYS[kind])}")


def validate_scenario(sc: dict[str, Any]) -> None:
    """Reject misspelt keys early (a typo would otherwise silently fall back to a default)."""
    _check("top", sc, "top level")
    _check("vcenter", sc.get("vcenter") or {}, "vcenter")
    for u in sc.get("users") or []:
        _check("user", u, f"user {u.get('name')!r}" if isinstance(u, dict) else "user")
        for p in u.get("permissions") or []:
            _check("permission", p, f"permission of {u.get('name')!r}")
    for dc in sc.get("datacenters") or []:
        _check("datacenter", dc, "datacenter")
        for ds in dc.get("datastores") or []:
            _check("datastore", ds, f"datastore in {dc.get('name')!r}")
        for cl in dc.get("clusters") or []:
            _check("cluster", cl, f"cluster in {dc.get('name')!r}")
        for vm in dc.get("vms") or []:
            _check("vm", vm, f"VM {vm.get('name')!r}" if isinstance(vm, dict) else "VM")
            for d in vm.get("disks") or []:
                _check("disk", d, f"disk of VM {vm.get('name')!r}")
            for n in vm.get("nics") or []:
                _check("nic", n, f"NIC of VM {vm.get('name')!r}")
