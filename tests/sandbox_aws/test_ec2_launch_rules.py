"""EC2 launch rules the local AWS keeps where moto does not (sandbox/aws/ec2_launch.py): images
from snapshots carry their mappings, instances get volumes from those snapshots, ClientToken makes
RunInstances idempotent. Each rule is also broken on purpose."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sandbox_aws_helpers import BLOCK, read_volume, write_snapshot


def _image(ec2: Any, snaps: list[str], **kw: Any) -> str:
    devices = ["/dev/sda1", "/dev/sdb", "/dev/sdc"]
    return str(
        ec2.register_image(
            Name=kw.pop("Name", f"img-{uuid.uuid4().hex[:8]}"),
            RootDeviceName=kw.pop("RootDeviceName", "/dev/sda1"),
            BlockDeviceMappings=[
                {"DeviceName": devices[i], "Ebs": {"SnapshotId": s, "DeleteOnTermination": True}}
                for i, s in enumerate(snaps)
            ],
            Architecture="x86_64",
            VirtualizationType="hvm",
            BootMode=kw.pop("BootMode", "legacy-bios"),
            **kw,
        )["ImageId"]
    )


def _code(exc: Any) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_image_from_snapshots_keeps_its_mappings_and_boot_mode(ebs: Any, ec2: Any) -> None:
    boot = write_snapshot(ebs, ec2, {0: b"\1" * BLOCK}, volume_size=3)
    data = write_snapshot(ebs, ec2, {1: b"\2" * BLOCK}, volume_size=2)
    image_id = _image(ec2, [boot, data], BootMode="uefi")
    ami = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert ami["RootDeviceName"] == "/dev/sda1" and ami["BootMode"] == "uefi"
    got = {m["DeviceName"]: (m["Ebs"]["SnapshotId"], m["Ebs"]["VolumeSize"])
           for m in ami["BlockDeviceMappings"]}
    assert got == {"/dev/sda1": (boot, 3), "/dev/sdb": (data, 2)}
    # No placeholder snapshot of moto's own is left behind by the registration.
    assert ec2.describe_snapshots(
        Filters=[{"Name": "description", "Values": [f"*{image_id}*"]}]
    )["Snapshots"] == []


def test_instance_volumes_come_from_the_images_snapshots(ebs: Any, ec2: Any) -> None:
    boot = write_snapshot(ebs, ec2, {0: b"\3" * BLOCK, 2: b"\4" * BLOCK}, volume_size=3)
    data = write_snapshot(ebs, ec2, {1: b"\5" * BLOCK}, volume_size=2)
    image_id = _image(ec2, [boot, data])
    run = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        BlockDeviceMappings=[{"DeviceName": "/dev/sdb", "Ebs": {"VolumeType": "io2", "Iops": 500}}],
    )
    iid = run["Instances"][0]["InstanceId"]
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    vols = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}
    assert set(vols) == {"/dev/sda1", "/dev/sdb"}
    described = {v["VolumeId"]: v for v in
                 ec2.describe_volumes(VolumeIds=list(vols.values()))["Volumes"]}
    assert described[vols["/dev/sda1"]]["SnapshotId"] == boot
    assert described[vols["/dev/sda1"]]["Size"] == 3
    assert described[vols["/dev/sdb"]]["SnapshotId"] == data
    assert described[vols["/dev/sdb"]]["VolumeType"] == "io2"
    # The volume's source snapshot still reads through the EBS direct APIs, byte for byte.
    assert read_volume(ebs, described[vols["/dev/sda1"]]["SnapshotId"]) == {
        0: b"\3" * BLOCK, 2: b"\4" * BLOCK}
    ec2.terminate_instances(InstanceIds=[iid])
    left = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": list(vols.values())}])
    assert left["Volumes"] == []  # DeleteOnTermination from the image's mappings


def test_client_token_returns_the_first_instance(ebs: Any, ec2: Any) -> None:
    boot = write_snapshot(ebs, ec2, {0: b"\6" * BLOCK}, volume_size=1)
    image_id = _image(ec2, [boot])
    token = f"tok-{uuid.uuid4().hex}"
    first = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                              ClientToken=token)["Instances"][0]["InstanceId"]
    again = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                              ClientToken=token)["Instances"][0]["InstanceId"]
    assert again == first
    tagged = ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [image_id]}])
    assert [i["InstanceId"] for r in tagged["Reservations"] for i in r["Instances"]] == [first]
    with pytest.raises(ClientError) as exc:
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m5.large",
                          ClientToken=token)
    assert _code(exc) == "IdempotentParameterMismatch"
    other = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                              ClientToken=f"tok-{uuid.uuid4().hex}")["Instances"][0]["InstanceId"]
    assert other != first


def test_register_image_refuses_what_ec2_refuses(ebs: Any, ec2: Any) -> None:
    boot = write_snapshot(ebs, ec2, {0: b"\7" * BLOCK}, volume_size=1)
    with pytest.raises(ClientError) as exc:
        _image(ec2, ["snap-0123456789abcdef0"])
    assert _code(exc) == "InvalidSnapshot.NotFound"
    pending = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    with pytest.raises(ClientError) as exc:
        _image(ec2, [pending])
    assert _code(exc) == "IncorrectState"
    with pytest.raises(ClientError) as exc:
        _image(ec2, [boot], RootDeviceName="/dev/xvda")
    assert _code(exc) == "InvalidBlockDeviceMapping"
    name = f"dup-{uuid.uuid4().hex[:8]}"
    _image(ec2, [boot], Name=name)
    with pytest.raises(ClientError) as exc:
        _image(ec2, [boot], Name=name)
    assert _code(exc) == "InvalidAMIName.Duplicate"
    ec2.delete_snapshot(SnapshotId=pending)


def test_deleted_subnet_refuses_the_launch(ebs: Any, ec2: Any) -> None:
    boot = write_snapshot(ebs, ec2, {0: b"\10" * BLOCK}, volume_size=1)
    image_id = _image(ec2, [boot])
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    ec2.delete_subnet(SubnetId=subnet)
    before = len(ec2.describe_instances()["Reservations"])
    with pytest.raises(ClientError) as exc:
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                          SubnetId=subnet)
    assert _code(exc) == "InvalidSubnetID.NotFound"
    assert len(ec2.describe_instances()["Reservations"]) == before


def test_snapshot_used_by_an_image_cannot_be_deleted(ebs: Any, ec2: Any) -> None:
    boot = write_snapshot(ebs, ec2, {0: b"\11" * BLOCK}, volume_size=1)
    image_id = _image(ec2, [boot])
    with pytest.raises(ClientError) as exc:
        ec2.delete_snapshot(SnapshotId=boot)
    assert _code(exc) == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=image_id)
    ec2.delete_snapshot(SnapshotId=boot)
