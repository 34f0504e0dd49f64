"""The sandbox's appliance VM as its own guest would see it: a DMI product_uuid file.

snapship finds the VM it runs on from `/sys/class/dmi/id/product_uuid` (snapship.appliance).
The machine running the sandbox is not that VM, so the sandbox writes the file the appliance
VM's Linux would expose and the client reads it through the documented override
(`SNAPSHIP_DMI_PRODUCT_UUID_PATH`). Detection itself is the production code, unchanged.

Linux on virtual hardware before version 13 shows the first three fields of the BIOS UUID
byte-swapped (VMware wrote them big-endian into SMBIOS < 2.6); the file reproduces that.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

DMI_FILE = "dmi/product_uuid"
SWAPPED_BEFORE_HW = 13


def guest_product_uuid(bios_uuid: str, hardware_version: str = "") -> str:
    """What `cat /sys/class/dmi/id/product_uuid` prints inside a VM with this BIOS UUID."""
    m = re.fullmatch(r"vmx-(\d+)", hardware_version or "")
    value = uuid.UUID(bios_uuid)
    if m and int(m.group(1)) < SWAPPED_BEFORE_HW:
        value = uuid.UUID(bytes=value.bytes_le)
    return str(value).upper()  # as the kernel prints it


def write_appliance_dmi(admin: Any, state_dir: Path) -> Path | None:
    """Write the appliance VM's product_uuid under `state_dir`; None without an appliance VM."""
    for brief in admin.vms():
        vm = admin.vm(brief["name"])
        if vm.get("snapship_client"):
            path = state_dir / DMI_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                guest_product_uuid(vm["bios_uuid"], vm.get("hardware_version", "")) + "\n"
            )
            return path
    return None
