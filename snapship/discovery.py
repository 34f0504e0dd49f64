"""Discovery as a library: vCenter inventory -> one DiscoveredServer per replicable candidate.

Why separate from Temporal: the same scan feeds the discovery activity, the benchmark and tests.
What it decides:
- Templates and the client's own VM are left out entirely (MGN never lists the appliance, and a
  template cannot run); every other VM is reported with its eligibility reasons, so an ineligible
  VM is visible in DISCOVERED with the reason instead of silently missing.
- Identity is the VM's instance UUID (falling back to the BIOS UUID), never its name or moref,
  so a renamed VM keeps its source server and history.
- A known server whose VM is no longer in the inventory is reported as vanished.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from snapship import messages
from snapship.config import source_server_id
from snapship.vsphere import facts as vfacts
from snapship.vsphere.eligibility import check_eligibility, is_client_vm
from snapship.vsphere.inventory import read_inventory
from snapship.vsphere.session import VcenterSession

VANISHED_REASON = "The VM is no longer in vCenter's inventory (deleted or unregistered)."


@dataclass
class DiscoveryScan:
    """One read of the inventory, turned into discovery signals, and what it cost."""

    vcenter_uuid: str
    servers: list[messages.DiscoveredServer]
    vms_seen: int = 0
    templates_skipped: int = 0
    client_vm_skipped: int = 0
    no_uuid_skipped: list[str] = field(default_factory=list)
    round_trips: int = 0
    inventory_seconds: float = 0.0
    duration_seconds: float = 0.0

    @property
    def eligible(self) -> int:
        return sum(1 for s in self.servers if s.eligibility.eligible)

    @property
    def ineligible(self) -> int:
        return len(self.servers) - self.eligible

    def ids(self) -> dict[str, messages.DiscoveredServer]:
        return {
            source_server_id(self.vcenter_uuid, s.facts.instance_uuid): s for s in self.servers
        }


def identity_uuid(vm: vfacts.VmFacts) -> str:
    """The UUID a source server is keyed by: instance UUID, else BIOS UUID, else empty."""
    return (vm.instance_uuid or vm.bios_uuid or "").lower()


def to_message_facts(vm: vfacts.VmFacts) -> messages.VmFacts:
    """vSphere facts -> the JSON-friendly facts workflows carry (what conversion needs later)."""
    return messages.VmFacts(
        moref=vm.moref,
        name=vm.name,
        instance_uuid=identity_uuid(vm),
        bios_uuid=vm.bios_uuid or "",
        template=vm.template,
        hardware_version=vm.hardware_version or "",
        guest_id=vm.guest_id or "",
        guest_full_name=vm.guest_full_name or "",
        firmware=vm.firmware or "bios",
        num_cpu=int(vm.num_cpu or 0),
        memory_mb=int(vm.memory_mb or 0),
        power_state=vm.power_state or "",
        host=vm.host_moref or "",
        host_name=vm.host_name or "",
        datastores=[d.name for d in vm.datastores],
        nics=[
            messages.NicFacts(
                mac_address=n.mac_address or "", network=n.network_name or "", label=n.label
            )
            for n in vm.nics
        ],
        disks=[
            messages.DiskFacts(
                device_key=d.device_key,
                label=d.label,
                capacity_bytes=d.capacity_bytes,
                backing_type=d.backing_type,
                disk_mode=d.disk_mode or "",
                file_name=d.file_name or "",
                backing_uuid=d.backing_uuid or "",
                controller_key=int(d.controller_key or 0),
                unit_number=int(d.unit_number or 0),
                datastore_type=d.datastore_type or "",
            )
            for d in vm.disks
        ],
        snapshot_names=list(vm.snapshot_names),
        consolidation_needed=vm.consolidation_needed,
        change_tracking_enabled=bool(vm.change_tracking_enabled),
        guest_free_bytes=[g.free_bytes for g in vm.guest_disks],
        tools_status=vm.tools_status or "",
    )


def classify(
    vms: Iterable[vfacts.VmFacts],
    vcenter_uuid: str,
    client_vm_uuid: str = "",
    tags: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> DiscoveryScan:
    """Turn inventory facts into DiscoveredServer signals (templates and the client VM left out)."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    scan = DiscoveryScan(vcenter_uuid=vcenter_uuid, servers=[])
    for vm in vms:
        scan.vms_seen += 1
        if vm.template:
            scan.templates_skipped += 1
            continue
        if is_client_vm(vm, client_vm_uuid):
            scan.client_vm_skipped += 1
            continue
        if not identity_uuid(vm):
            scan.no_uuid_skipped.append(vm.name)
            continue
        result = check_eligibility(vm, client_vm_uuid or None)
        scan.servers.append(
            messages.DiscoveredServer(
                facts=to_message_facts(vm),
                eligibility=messages.Eligibility(
                    eligible=result.eligible,
                    reasons=list(result.reasons),
                    warnings=list(result.warnings),
                ),
                discovered_at=stamp,
                tags=dict(tags or {}),
            )
        )
    return scan


def scan_vcenter(
    session: VcenterSession,
    client_vm_uuid: str = "",
    tags: Mapping[str, str] | None = None,
    max_objects: int = 1000,
) -> DiscoveryScan:
    """Read the whole inventory through `session` and classify it."""
    started = time.monotonic()
    inventory = read_inventory(session, max_objects=max_objects)
    scan = classify(inventory.vms, session.instance_uuid, client_vm_uuid, tags)
    scan.round_trips = inventory.round_trips
    scan.inventory_seconds = inventory.duration_s
    scan.duration_seconds = time.monotonic() - started
    return scan


def vanished_server(
    workflow_id: str,
    vm_name: str,
    vcenter_uuid: str,
    tags: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> messages.DiscoveredServer:
    """The signal for a known server whose VM is gone: not eligible, flagged vanished.

    Only identity is known here (the workflow keeps the facts it last saw); the instance UUID is
    recovered from the workflow id.
    """
    prefix = source_server_id(vcenter_uuid, "")
    instance_uuid = workflow_id[len(prefix):] if workflow_id.startswith(prefix) else ""
    return messages.DiscoveredServer(
        facts=messages.VmFacts(moref="", name=vm_name, instance_uuid=instance_uuid),
        eligibility=messages.Eligibility(eligible=False, reasons=[VANISHED_REASON]),
        discovered_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        tags=dict(tags or {}),
        vanished=True,
    )
