"""Can this VM be replicated by snapshot shipping? MGN's agentless requirements, as rules.

Pure: works on ``VmFacts`` only, so discovery, preflight and tests share one rule set. Reasons
block replication and say what to change; warnings do not block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from snapship.vsphere.facts import FLAT_VER2_BACKING, RDM_BACKING, VmFacts

MIN_HARDWARE_VERSION = 7
MIN_GUEST_FREE_BYTES = 2 * 1024**3
# Snapshots whose name starts with this are snapship's own (see snapshots.py); leftovers from a
# crashed run are removed by the next run, so they do not make a VM ineligible.
OWN_SNAPSHOT_PREFIX = "snapship-"
VVOL_TYPE = "VVOL"


@dataclass
class EligibilityResult:
    eligible: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def hardware_version_number(version: str | None) -> int | None:
    """``"vmx-07"`` -> 7; None when the string is not a vmx-NN version."""
    m = re.fullmatch(r"vmx-(\d+)", (version or "").strip())
    return int(m.group(1)) if m else None


def _uuid_forms(value: str) -> set[str]:
    """A UUID as vCenter shows it and as the guest's DMI table may show it (byte-swapped)."""
    hexs = re.sub(r"[^0-9a-f]", "", value.lower())
    if len(hexs) != 32:
        return {value.lower()}
    swapped = (
        bytes.fromhex(hexs[0:8])[::-1].hex()
        + bytes.fromhex(hexs[8:12])[::-1].hex()
        + bytes.fromhex(hexs[12:16])[::-1].hex()
        + hexs[16:]
    )
    return {hexs, swapped}


def is_client_vm(vm: VmFacts, client_vm_uuid: str | None) -> bool:
    """True when ``client_vm_uuid`` (instance UUID, BIOS UUID or DMI product_uuid) names ``vm``."""
    if not client_vm_uuid:
        return False
    wanted = _uuid_forms(client_vm_uuid)
    for candidate in (vm.instance_uuid, vm.bios_uuid):
        if candidate and _uuid_forms(candidate) & wanted:
            return True
    return False


def _free_text(n: int) -> str:
    """Rounded down, so a volume just under the limit never reads as "2.0 GiB"."""
    return f"{n // 1024**2} MiB"


def check_eligibility(vm: VmFacts, client_vm_uuid: str | None) -> EligibilityResult:
    reasons: list[str] = []
    warnings: list[str] = []

    if is_client_vm(vm, client_vm_uuid):
        reasons.append(
            "This is the VM the snapship client runs on; the client never replicates itself."
        )
    if vm.template:
        reasons.append("The VM is a template; templates cannot run and are not replicated.")
    if vm.connection_state not in (None, "connected"):
        reasons.append(
            f"vCenter reports the VM as {vm.connection_state}; reconnect its host or re-register "
            "the VM."
        )

    hw = hardware_version_number(vm.hardware_version)
    if hw is None:
        reasons.append(
            f"Unknown hardware version {vm.hardware_version!r}; vmx-07 or newer is required."
        )
    elif hw < MIN_HARDWARE_VERSION:
        reasons.append(
            f"Hardware version {vm.hardware_version} is older than vmx-07 (needed for Changed "
            "Block Tracking); upgrade the VM compatibility to vmx-07 or newer."
        )

    foreign = [n for n in vm.snapshot_names if not n.startswith(OWN_SNAPSHOT_PREFIX)]
    own = [n for n in vm.snapshot_names if n.startswith(OWN_SNAPSHOT_PREFIX)]
    if foreign:
        reasons.append(
            f"The VM has VMware snapshots ({', '.join(foreign)}); replication needs a VM without "
            "snapshots: delete them in Snapshot Manager."
        )
    if own:
        warnings.append(
            f"Leftover snapship snapshot(s) ({', '.join(own)}) will be removed by the next run."
        )
    if vm.consolidation_needed:
        reasons.append(
            "The VM's disks need consolidation (vCenter reports consolidationNeeded); run "
            "Snapshots > Consolidate first."
        )

    if not vm.disks:
        reasons.append("The VM has no virtual disks; there is nothing to replicate.")
    for disk in vm.disks:
        name = f"Disk '{disk.label}'"
        if disk.backing_type == RDM_BACKING:
            reasons.append(
                f"{name} is a raw device mapping (RDM, {disk.compatibility_mode or 'unknown'} "
                "mode); RDMs are not supported: migrate it to a VMDK."
            )
            continue
        if disk.backing_type != FLAT_VER2_BACKING:
            reasons.append(
                f"{name} uses a {disk.backing_type} backing; only VirtualDiskFlatVer2BackingInfo "
                "(flat VMDK) disks are supported (no direct-attach, sparse or other backings)."
            )
            continue
        if disk.disk_mode and disk.disk_mode.startswith("independent"):
            reasons.append(
                f"{name} is an independent disk ({disk.disk_mode}); snapshots do not capture "
                "independent disks: change its mode to Dependent."
            )
        if disk.sharing == "sharingMultiWriter":
            reasons.append(f"{name} is shared (multi-writer); shared disks cannot be snapshotted.")
        if (disk.datastore_type or "").upper() == VVOL_TYPE:
            reasons.append(
                f"{name} is on a VMware Virtual Volumes datastore ({disk.datastore_name}); VVols "
                "are not supported: Storage vMotion it to a VMFS, NFS or vSAN datastore."
            )
    for ds in vm.datastores:
        if ds.type.upper() == VVOL_TYPE and not any(
            d.datastore_moref == ds.moref for d in vm.disks
        ):
            reasons.append(
                f"The VM's files are on a VMware Virtual Volumes datastore ({ds.name}); VVols are "
                "not supported."
            )

    if vm.power_state == "poweredOn" and vm.tools_running_status == "guestToolsRunning":
        for gd in vm.guest_disks:
            if gd.capacity_bytes > 0 and gd.free_bytes < MIN_GUEST_FREE_BYTES:
                warnings.append(
                    f"Guest volume {gd.path} has {_free_text(gd.free_bytes)} free (VMware "
                    "Tools); at least 2 GiB free is recommended for replication."
                )
    elif vm.power_state == "poweredOn":
        warnings.append(
            "VMware Tools is not running, so free guest disk space (2 GiB recommended) cannot be "
            "checked."
        )

    return EligibilityResult(eligible=not reasons, reasons=reasons, warnings=warnings)
