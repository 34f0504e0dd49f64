"""Launch helpers from a complete snapshot group: volumes, an image, an instance.

Launches always read from completed snapshots and never modify the chain: volumes and images are
new resources that reference the snapshots, so replication continues undisturbed. The boot disk is
the group's disk with the lowest device key unless told otherwise (vSphere numbers the first disk
on the first controller lowest).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from snapship.ebs.client import EbsCallError
from snapship.ebs.groups import SnapshotGroup

ROOT_DEVICE = "/dev/sda1"
_DATA_LETTERS = string.ascii_lowercase[1:]  # sdb, sdc, ...


def boot_mode_for_firmware(firmware: str) -> str:
    """vSphere firmware ("bios"/"efi") -> EC2 boot mode ("legacy-bios"/"uefi")."""
    value = (firmware or "bios").strip().lower()
    if value == "efi":
        return "uefi"
    if value == "bios":
        return "legacy-bios"
    raise ValueError(f"unknown firmware {firmware!r}")


def _require_complete(group: SnapshotGroup) -> None:
    if not group.complete:
        raise ValueError(f"group {group.group_id} is not complete; refusing to launch from it")


def _tag_spec(resource: str, tags: Mapping[str, str] | None) -> list[dict[str, Any]]:
    if not tags:
        return []
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


@dataclass(frozen=True)
class DeviceMapping:
    device_name: str
    snapshot_id: str
    device_key: int
    volume_size_gib: int


def device_mappings(
    group: SnapshotGroup, boot_device_key: int | None = None
) -> list[DeviceMapping]:
    """Boot disk on /dev/sda1, the others on /dev/sdb, /dev/sdc, ... in device key order."""
    members = group.by_device_key()
    if boot_device_key is not None:
        members.sort(key=lambda s: (s.tags.device_key != boot_device_key, s.tags.device_key))
    if len(members) > len(_DATA_LETTERS) + 1:
        raise ValueError("too many disks for /dev/sd[b-z]")
    out = []
    for i, snap in enumerate(members):
        name = ROOT_DEVICE if i == 0 else f"/dev/sd{_DATA_LETTERS[i - 1]}"
        out.append(
            DeviceMapping(name, snap.snapshot_id, snap.tags.device_key, snap.volume_size_gib)
        )
    return out


def create_volumes(
    ec2: Any,
    group: SnapshotGroup,
    availability_zone: str,
    volume_type: str = "gp3",
    tags: Mapping[str, str] | None = None,
) -> dict[int, str]:
    """CreateVolume per snapshot; returns {device key: volume id}."""
    _require_complete(group)
    volumes: dict[int, str] = {}
    for snap in group.by_device_key():
        try:
            resp = ec2.create_volume(
                SnapshotId=snap.snapshot_id,
                AvailabilityZone=availability_zone,
                VolumeType=volume_type,
                TagSpecifications=_tag_spec("volume", tags),
            )
        except ClientError as exc:
            raise EbsCallError.from_exception("CreateVolume", exc) from exc
        volumes[snap.tags.device_key] = str(resp["VolumeId"])
    return volumes


def register_image(
    ec2: Any,
    group: SnapshotGroup,
    name: str,
    firmware: str = "bios",
    architecture: str = "x86_64",
    boot_device_key: int | None = None,
    volume_type: str = "gp3",
) -> str:
    """RegisterImage with one block device mapping per snapshot; returns the image id."""
    _require_complete(group)
    mappings = device_mappings(group, boot_device_key)
    try:
        resp = ec2.register_image(
            Name=name,
            Architecture=architecture,
            RootDeviceName=ROOT_DEVICE,
            VirtualizationType="hvm",
            EnaSupport=True,
            BootMode=boot_mode_for_firmware(firmware),
            BlockDeviceMappings=[
                {
                    "DeviceName": m.device_name,
                    "Ebs": {
                        "SnapshotId": m.snapshot_id,
                        "DeleteOnTermination": True,
                        "VolumeType": volume_type,
                    },
                }
                for m in mappings
            ],
        )
    except ClientError as exc:
        raise EbsCallError.from_exception("RegisterImage", exc) from exc
    return str(resp["ImageId"])


def run_instance(
    ec2: Any,
    image_id: str,
    instance_type: str = "t3.medium",
    subnet_id: str | None = None,
    security_group_ids: list[str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """RunInstances for one instance from `image_id`; returns the instance id."""
    kwargs: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "TagSpecifications": _tag_spec("instance", tags),
    }
    if subnet_id:
        kwargs["SubnetId"] = subnet_id
    if security_group_ids:
        kwargs["SecurityGroupIds"] = security_group_ids
    try:
        resp = ec2.run_instances(**kwargs)
    except ClientError as exc:
        raise EbsCallError.from_exception("RunInstances", exc) from exc
    return str(resp["Instances"][0]["InstanceId"])
