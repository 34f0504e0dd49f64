"""Which vCenter VM is this client running on? So discovery can leave the appliance out.

MGN: "The MGN vCenter Appliance is excluded from the discovered servers list." A client that
replicated itself would snapshot its own disks under load and show up as a candidate for
cutover, so install finds its own VM and records it (`client_vm_uuid`).

How: Linux exposes the VM's BIOS UUID as `/sys/class/dmi/id/product_uuid` (readable by root
only). vCenter knows the same value as `config.uuid` and finds the VM by it with
SearchIndex.FindByUuid(vmSearch=True, instanceUuid=False). VMware's byte-order quirk: for
virtual hardware before version 13 the guest sees the first three fields byte-swapped (SMBIOS
< 2.6 stored them big-endian, Linux reads them little-endian), so both forms are tried.

`SNAPSHIP_DMI_PRODUCT_UUID_PATH` overrides where the file is read from. It exists for machines
whose DMI table is not this VM's (a container, a test); production leaves it unset.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DMI_PRODUCT_UUID = Path("/sys/class/dmi/id/product_uuid")
DMI_PATH_ENV = "SNAPSHIP_DMI_PRODUCT_UUID_PATH"


@dataclass
class ClientVm:
    """The appliance as vCenter knows it."""

    name: str
    instance_uuid: str
    bios_uuid: str
    moref: str


def dmi_path(env: dict[str, str] | None = None) -> Path:
    value = (os.environ if env is None else env).get(DMI_PATH_ENV, "")
    return Path(value) if value else DMI_PRODUCT_UUID


def read_product_uuid(path: Path | None = None) -> str | None:
    """The DMI product UUID (lower case), or None when absent, unreadable or not a UUID."""
    where = path or dmi_path()
    try:
        text = where.read_text(encoding="ascii", errors="replace").strip()
    except OSError:  # not Linux, not a VM, or not root
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def swap_first_fields(value: str) -> str:
    """The same UUID with its first three fields byte-swapped (VMware's guest/host quirk)."""
    return str(uuid.UUID(bytes_le=uuid.UUID(value).bytes))


def bios_uuid_forms(product_uuid: str) -> list[str]:
    """What vCenter's `config.uuid` may read for this product UUID: as is, then swapped."""
    as_is = str(uuid.UUID(product_uuid))
    swapped = swap_first_fields(as_is)
    return [as_is] if swapped == as_is else [as_is, swapped]


def find_client_vm(content: Any, product_uuid: str) -> ClientVm | None:
    """Look the product UUID up in vCenter (ServiceContent `content`); None when no VM has it."""
    for candidate in bios_uuid_forms(product_uuid):
        vm = content.searchIndex.FindByUuid(
            datacenter=None, uuid=candidate, vmSearch=True, instanceUuid=False
        )
        if vm is None:
            continue
        config = vm.config
        return ClientVm(
            name=str(vm.name),
            instance_uuid=str(config.instanceUuid),
            bios_uuid=str(config.uuid),
            moref=str(vm._moId),
        )
    return None
