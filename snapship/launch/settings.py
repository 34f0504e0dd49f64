"""Launch settings rules that need no AWS call: value checks, defaults from discovery, and
BASIC right-sizing over a list of instance types that EC2 described.

Pure, so the Update validator can refuse bad input at once; checks that need EC2 (the subnet and
instance type exist, the type supports the boot mode) run in an activity before saving.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapship.launch.messages import LaunchSettings

DISPOSITIONS = ("STARTED", "STOPPED")
BOOT_MODES = ("USE_SOURCE", "LEGACY_BIOS", "UEFI")
RIGHT_SIZING = ("NONE", "BASIC")
VOLUME_TYPES = ("io1", "io2", "gp3", "gp2", "st1", "sc1", "standard")
# EC2's documented ranges (CreateVolume): IOPS and throughput per volume type.
_IOPS_RANGE = {"gp3": (3000, 16000), "io1": (100, 64000), "io2": (100, 256000)}
_THROUGHPUT_RANGE = {"gp3": (125, 1000)}


@dataclass(frozen=True)
class InstanceTypeInfo:
    """The facts of DescribeInstanceTypes that right-sizing and validation use."""

    name: str
    vcpus: int
    memory_mib: int
    current_generation: bool
    boot_modes: tuple[str, ...]  # EC2's names: "legacy-bios", "uefi"
    architectures: tuple[str, ...] = ("x86_64",)


def settings_problems(s: LaunchSettings) -> list[str]:
    """Every value problem, each a sentence; empty when the settings are well formed."""
    out: list[str] = []
    if s.launch_disposition not in DISPOSITIONS:
        out.append(f"launch disposition must be one of {', '.join(DISPOSITIONS)}")
    if s.boot_mode not in BOOT_MODES:
        out.append(f"boot mode must be one of {', '.join(BOOT_MODES)}")
    if s.right_sizing not in RIGHT_SIZING:
        out.append(f"right-sizing must be one of {', '.join(RIGHT_SIZING)}")
    if s.right_sizing == "NONE" and not s.instance_type:
        out.append("an instance type is needed when right-sizing is NONE")
    if s.kms_key_id and not s.encrypted:
        out.append("a KMS key is given but EBS encryption is off")
    if s.private_ip and not s.copy_private_ip:
        out.append("a private IP is given but private IP copy is off")
    keys = [v.device_key for v in s.volumes]
    if len(keys) != len(set(keys)):
        out.append("volume settings name the same disk twice")
    out.extend(_volume_problems("default volume", s.volume_type, None, None))
    for vol in s.volumes:
        out.extend(
            _volume_problems(f"disk {vol.device_key}", vol.volume_type, vol.iops, vol.throughput)
        )
    return out


def _volume_problems(
    where: str, volume_type: str, iops: int | None, throughput: int | None
) -> list[str]:
    if volume_type not in VOLUME_TYPES:
        return [f"{where}: volume type must be one of {', '.join(VOLUME_TYPES)}"]
    out: list[str] = []
    if iops is not None:
        rng = _IOPS_RANGE.get(volume_type)
        if rng is None:
            out.append(f"{where}: {volume_type} volumes take no IOPS setting")
        elif not rng[0] <= iops <= rng[1]:
            out.append(f"{where}: {volume_type} IOPS must be within {rng[0]}-{rng[1]}")
    elif volume_type in ("io1", "io2"):
        out.append(f"{where}: {volume_type} volumes need an IOPS setting")
    if throughput is not None:
        rng = _THROUGHPUT_RANGE.get(volume_type)
        if rng is None:
            out.append(f"{where}: {volume_type} volumes take no throughput setting")
        elif not rng[0] <= throughput <= rng[1]:
            out.append(f"{where}: {volume_type} throughput must be within {rng[0]}-{rng[1]} MiB/s")
    return out


def ec2_boot_mode(setting: str, firmware: str) -> str:
    """LaunchSettings.boot_mode -> EC2's BootMode; USE_SOURCE follows the VM's firmware."""
    if setting == "UEFI":
        return "uefi"
    if setting == "LEGACY_BIOS":
        return "legacy-bios"
    return "uefi" if (firmware or "bios").strip().lower() == "efi" else "legacy-bios"


def right_size(
    types: list[InstanceTypeInfo], vcpus: int, memory_mib: int, boot_mode: str
) -> InstanceTypeInfo | None:
    """BASIC right-sizing: the smallest current-generation x86_64 type with at least the VM's
    vCPUs and memory that supports the boot mode (fewest vCPUs, then least memory, then name)."""
    fits = [
        t
        for t in types
        if t.current_generation
        and "x86_64" in t.architectures
        and boot_mode in t.boot_modes
        and t.vcpus >= max(vcpus, 1)
        and t.memory_mib >= max(memory_mib, 512)
    ]
    if not fits:
        return None
    return min(fits, key=lambda t: (t.vcpus, t.memory_mib, t.name))


def type_problems(info: InstanceTypeInfo | None, name: str, boot_mode: str) -> list[str]:
    """What EC2 said about a chosen instance type, as sentences."""
    if info is None:
        return [f"instance type {name} does not exist in this region"]
    if boot_mode not in info.boot_modes:
        return [f"instance type {name} does not support the {boot_mode} boot mode"]
    return []
