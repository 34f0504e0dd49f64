"""EC2 calls of a launch job: an image registered from a complete snapshot group, one instance
from it, and termination.

Idempotent under retry and worker death, so a job resumed on another worker never launches twice:
- the image's name is derived from job + server; a second RegisterImage answers
  InvalidAMIName.Duplicate and the existing image is used;
- RunInstances carries a ClientToken derived from job + server: EC2 returns the instance of the
  first call instead of launching another.
The snapshots are only referenced, never modified: replication keeps writing its chain meanwhile.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from snapship.ebs.client import EbsCallError, error_code
from snapship.launch.messages import GroupDisk, LaunchSettings, LaunchTarget
from snapship.launch.settings import InstanceTypeInfo

ROOT_DEVICE = "/dev/sda1"
TAG_SOURCE_SERVER = "snapship:source-server"
TAG_JOB = "snapship:job-id"
TAG_LAUNCH_TYPE = "snapship:launch-type"
TAG_GROUP = "snapship:launched-from-group"
MAX_TOKEN = 64
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9()\[\]./'@_-]")
# Codes that a later attempt cannot fix: the job records them for the server and moves on.
PERMANENT_CODES = {
    "InvalidSubnetID.NotFound",
    "InvalidSubnet",
    "InvalidGroup.NotFound",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidSnapshot.NotFound",
    "InvalidAMIID.NotFound",
    "Unsupported",
    "UnsupportedOperation",
    "IdempotentParameterMismatch",
    "InvalidKMSKey.InvalidState",
    "KMS.NotFoundException",
    "UnauthorizedOperation",
    "InvalidInstanceType",
}


def client_token(job_id: str, source_server_id: str, what: str = "run") -> str:
    """A ClientToken (at most 64 ASCII characters) unique to one create call of one job and
    server: the same on every retry and on every worker."""
    digest = hashlib.sha256(f"{job_id}\0{source_server_id}\0{what}".encode()).hexdigest()
    return f"snapship-{what}-{digest}"[:MAX_TOKEN]


def image_name(job_id: str, source_server_id: str) -> str:
    """The AMI name (3-128 characters of EC2's allowed set), unique per job and server."""
    digest = hashlib.sha256(f"{job_id}\0{source_server_id}".encode()).hexdigest()[:16]
    return _NAME_UNSAFE.sub("_", f"snapship-{job_id}-{digest}")[:128]


def _tags(kind: str, resource: str, tags: Mapping[str, str]) -> dict[str, Any]:
    return {"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def launch_tags(job_id: str, target: LaunchTarget) -> dict[str, str]:
    """Tags on the image, instance and volumes: source server, job and test/cutover; the VM's
    vSphere tags when copy-tags is on (ours win on a clash)."""
    out = dict(target.tags) if target.settings.copy_tags else {}
    out.update(
        {
            "Name": target.vm_name[:256],
            TAG_SOURCE_SERVER: target.source_server_id[:256],
            TAG_JOB: job_id[:256],
            TAG_LAUNCH_TYPE: target.kind,
            TAG_GROUP: target.group_id[:256],
        }
    )
    return out


def ordered_disks(disks: list[GroupDisk]) -> list[tuple[str, GroupDisk]]:
    """Boot disk (lowest device key) on /dev/sda1, the others on /dev/sdb, /dev/sdc, ..."""
    ordered = sorted(disks, key=lambda d: d.device_key)
    if len(ordered) > 26:
        raise ValueError("too many disks for /dev/sd[a-z]")
    return [
        (ROOT_DEVICE if i == 0 else f"/dev/sd{chr(ord('a') + i)}", d) for i, d in enumerate(ordered)
    ]


def _ebs_settings(settings: LaunchSettings, device_key: int) -> dict[str, Any]:
    vol = next((v for v in settings.volumes if v.device_key == device_key), None)
    ebs: dict[str, Any] = {
        "DeleteOnTermination": True,
        "VolumeType": vol.volume_type if vol else settings.volume_type,
    }
    if vol is not None and vol.iops is not None:
        ebs["Iops"] = vol.iops
    if vol is not None and vol.throughput is not None:
        ebs["Throughput"] = vol.throughput
    if settings.encrypted:
        ebs["Encrypted"] = True
        if settings.kms_key_id:
            ebs["KmsKeyId"] = settings.kms_key_id
    return ebs


def find_image(ec2: Any, name: str) -> str | None:
    try:
        resp = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    except ClientError as exc:
        raise EbsCallError.from_exception("DescribeImages", exc) from exc
    images = [i for i in resp.get("Images", []) if i.get("State") != "deregistered"]
    return str(images[0]["ImageId"]) if images else None


def register_image(ec2: Any, job_id: str, target: LaunchTarget) -> str:
    """RegisterImage from the group's snapshots (boot disk first), or the image an earlier
    attempt of this job registered."""
    name = image_name(job_id, target.source_server_id)
    found = find_image(ec2, name)
    if found:
        return found
    mappings = [
        {"DeviceName": dev, "Ebs": {"SnapshotId": d.snapshot_id, "DeleteOnTermination": True,
                                    "VolumeType": target.settings.volume_type}}
        for dev, d in ordered_disks(target.disks)
    ]
    try:
        resp = ec2.register_image(
            Name=name,
            Description=f"snapship {target.kind} of {target.vm_name} from {target.group_id}"[:255],
            Architecture="x86_64",
            RootDeviceName=ROOT_DEVICE,
            VirtualizationType="hvm",
            EnaSupport=True,
            BootMode=target.boot_mode,
            BlockDeviceMappings=mappings,
            TagSpecifications=[_tags(target.kind, "image", launch_tags(job_id, target))],
        )
    except ClientError as exc:
        if error_code(exc) == "InvalidAMIName.Duplicate":
            again = find_image(ec2, name)
            if again:
                return again
        raise _call_error("RegisterImage", exc) from exc
    return str(resp["ImageId"])


def run_instance(ec2: Any, job_id: str, target: LaunchTarget, image_id: str) -> str:
    """RunInstances with the server's settings; the ClientToken makes a repeat return the first
    call's instance."""
    s = target.settings
    tags = launch_tags(job_id, target)
    kwargs: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": target.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": client_token(job_id, target.source_server_id),
        "BlockDeviceMappings": [
            {"DeviceName": dev, "Ebs": _ebs_settings(s, d.device_key)}
            for dev, d in ordered_disks(target.disks)
        ],
        "TagSpecifications": [_tags(target.kind, "instance", tags),
                              _tags(target.kind, "volume", tags)],
    }
    if s.subnet_id:
        kwargs["SubnetId"] = s.subnet_id
    if s.security_group_ids:
        kwargs["SecurityGroupIds"] = list(s.security_group_ids)
    if s.copy_private_ip and s.private_ip:
        kwargs["PrivateIpAddress"] = s.private_ip
    try:
        resp = ec2.run_instances(**kwargs)
    except ClientError as exc:
        raise _call_error("RunInstances", exc) from exc
    return str(resp["Instances"][0]["InstanceId"])


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    state: str
    launch_time: str
    volumes: dict[str, str]  # device name -> volume id


def describe_instance(ec2: Any, instance_id: str) -> InstanceView:
    try:
        resp = ec2.describe_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        raise _call_error("DescribeInstances", exc) from exc
    inst = resp["Reservations"][0]["Instances"][0]
    launch = inst.get("LaunchTime")
    return InstanceView(
        instance_id=instance_id,
        state=str(inst["State"]["Name"]),
        launch_time=launch.isoformat() if hasattr(launch, "isoformat") else str(launch or ""),
        volumes={
            str(m["DeviceName"]): str(m["Ebs"]["VolumeId"])
            for m in inst.get("BlockDeviceMappings", [])
            if "Ebs" in m
        },
    )


def wait_running(
    ec2: Any, instance_id: str, timeout_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep, beat: Callable[[], None] = lambda: None,
) -> InstanceView:
    """Poll until the instance runs; a terminated or stopped instance is a failed launch."""
    deadline = time.monotonic() + timeout_s
    while True:
        view = describe_instance(ec2, instance_id)
        if view.state == "running":
            return view
        if view.state in ("terminated", "shutting-down", "stopped", "stopping"):
            raise EbsCallError("RunInstances", "InstanceFailed",
                               f"instance {instance_id} is {view.state} instead of running")
        if time.monotonic() > deadline:
            raise EbsCallError("RunInstances", "Timeout",
                               f"instance {instance_id} still {view.state}", retryable=True)
        beat()
        sleep(2.0)


def stop_instance(ec2: Any, instance_id: str) -> None:
    """Launch disposition STOPPED: EC2 launches running, MGN stops it once it has booted."""
    try:
        ec2.stop_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        raise _call_error("StopInstances", exc) from exc


def terminate_instances(ec2: Any, instance_ids: list[str]) -> list[str]:
    """TerminateInstances; instances already gone count as terminated. Their images go too."""
    if not instance_ids:
        return []
    images: set[str] = set()
    live: list[str] = []
    for iid in instance_ids:
        try:
            resp = ec2.describe_instances(InstanceIds=[iid])
        except ClientError as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                continue
            raise _call_error("DescribeInstances", exc) from exc
        inst = resp["Reservations"][0]["Instances"][0]
        if inst.get("ImageId"):
            images.add(str(inst["ImageId"]))
        if inst["State"]["Name"] != "terminated":
            live.append(iid)
    if live:
        try:
            ec2.terminate_instances(InstanceIds=live)
        except ClientError as exc:
            raise _call_error("TerminateInstances", exc) from exc
    for image_id in sorted(images):
        deregister_own_image(ec2, image_id)
    return list(instance_ids)


def deregister_own_image(ec2: Any, image_id: str) -> None:
    """Deregister an image only when snapship registered it (it carries our source-server tag);
    the snapshots it references belong to the replica chain and stay."""
    try:
        resp = ec2.describe_images(ImageIds=[image_id])
    except ClientError as exc:
        if error_code(exc).startswith("InvalidAMIID"):
            return
        raise _call_error("DescribeImages", exc) from exc
    for img in resp.get("Images", []):
        if any(t.get("Key") == TAG_SOURCE_SERVER for t in img.get("Tags", [])):
            try:
                ec2.deregister_image(ImageId=image_id)
            except ClientError as exc:
                if not error_code(exc).startswith("InvalidAMIID"):
                    raise _call_error("DeregisterImage", exc) from exc


def subnet_exists(ec2: Any, subnet_id: str) -> bool:
    try:
        resp = ec2.describe_subnets(SubnetIds=[subnet_id])
    except ClientError as exc:
        if error_code(exc) == "InvalidSubnetID.NotFound":
            return False
        raise _call_error("DescribeSubnets", exc) from exc
    return bool(resp.get("Subnets"))


def instance_types(ec2: Any, names: list[str] | None = None) -> list[InstanceTypeInfo]:
    """DescribeInstanceTypes (all current-generation types, or the named ones)."""
    kwargs: dict[str, Any] = (
        {"InstanceTypes": names} if names
        else {"Filters": [{"Name": "current-generation", "Values": ["true"]}]}
    )
    out: list[InstanceTypeInfo] = []
    try:
        for page in ec2.get_paginator("describe_instance_types").paginate(**kwargs):
            for t in page.get("InstanceTypes", []):
                out.append(
                    InstanceTypeInfo(
                        name=str(t["InstanceType"]),
                        vcpus=int(t.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
                        memory_mib=int(t.get("MemoryInfo", {}).get("SizeInMiB", 0)),
                        current_generation=bool(t.get("CurrentGeneration", False)),
                        boot_modes=tuple(t.get("SupportedBootModes") or ("legacy-bios",)),
                        architectures=tuple(
                            t.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
                        ),
                    )
                )
    except ClientError as exc:
        if names and error_code(exc) == "InvalidInstanceType":
            return []
        raise _call_error("DescribeInstanceTypes", exc) from exc
    return out


def _call_error(operation: str, exc: ClientError) -> EbsCallError:
    err = EbsCallError.from_exception(operation, exc)
    if err.code in PERMANENT_CODES:
        err.retryable = False
    return err
