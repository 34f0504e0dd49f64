"""EBS-direct snapshots seen through EC2 (moto): state, size, tags, deletion, volumes, AMIs."""

from __future__ import annotations

import random
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sandbox_aws_helpers import (
    BLOCK,
    SEALING_S,
    complete,
    ec2_state,
    error_of,
    put,
    rand_block,
    wait_state,
    write_snapshot,
)


def test_describe_snapshots_mirrors_state_size_tags(aws: Any, ebs: Any, ec2: Any) -> None:
    aws.admin.set_faults(complete_delay_seconds=SEALING_S)
    sid = ebs.start_snapshot(VolumeSize=5, Description="d0",
                             Tags=[{"Key": "group", "Value": "g1"}])["SnapshotId"]
    snap = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert snap["State"] == "pending"
    assert snap["VolumeSize"] == 5
    assert snap["VolumeId"] == "vol-ffffffff"
    assert snap["Description"] == "d0"
    assert {"Key": "group", "Value": "g1"} in snap["Tags"]
    put(ebs, sid, 0, b"\7" * BLOCK, Progress=40)
    assert ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Progress"] == "40%"
    complete(ebs, sid, {0: b"\7" * BLOCK})
    assert ec2_state(ec2, sid) == "pending"
    wait_state(ec2, sid, "completed")
    found = ec2.describe_snapshots(Filters=[{"Name": "tag:group", "Values": ["g1"]}])
    assert sid in [s["SnapshotId"] for s in found["Snapshots"]]


def test_create_tags_through_ec2(ebs: Any, ec2: Any) -> None:
    sid = write_snapshot(ebs, ec2, {})
    ec2.create_tags(Resources=[sid], Tags=[{"Key": "run", "Value": "7"}])
    tags = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Tags"]
    assert {"Key": "run", "Value": "7"} in tags


def test_delete_snapshot_through_ec2_removes_it_from_ebs(ebs: Any, ec2: Any) -> None:
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, sid, 0, rand_block(random.Random(8)))
    ec2.delete_snapshot(SnapshotId=sid)
    with pytest.raises(ClientError) as exc:
        put(ebs, sid, 1, rand_block(random.Random(9)))
    assert error_of(exc) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404)
    with pytest.raises(ClientError) as exc:
        ec2.describe_snapshots(SnapshotIds=[sid])
    assert exc.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_create_volume_register_image_run_instances(ebs: Any, ec2: Any) -> None:
    sid = write_snapshot(ebs, ec2, {0: b"\1" * BLOCK}, volume_size=8)
    vol = ec2.create_volume(SnapshotId=sid, AvailabilityZone="us-east-1a", VolumeType="gp3")
    assert vol["Size"] == 8 and vol["SnapshotId"] == sid
    vols = ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"]
    assert vols[0]["SnapshotId"] == sid
    image = ec2.register_image(
        Name=f"snapship-test-{sid}",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}],
        Architecture="x86_64",
        VirtualizationType="hvm",
        BootMode="uefi",
        EnaSupport=True,
    )
    ami = ec2.describe_images(ImageIds=[image["ImageId"]])["Images"][0]
    assert ami["Name"] == f"snapship-test-{sid}"  # (moto records its own root snapshot id)
    run = ec2.run_instances(ImageId=image["ImageId"], MinCount=1, MaxCount=1,
                            InstanceType="t3.micro")
    assert run["Instances"][0]["ImageId"] == image["ImageId"]
    assert ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]


def test_sts_and_counts_of_ec2_calls(aws: Any) -> None:
    sts = aws.client("sts")
    assert sts.get_caller_identity()["Account"].isdigit()
    aws.client("ec2").describe_volumes()
    requests = aws.admin.stats()["requests"]
    assert requests.get("sts:GetCallerIdentity", 0) >= 1
    assert requests.get("ec2:DescribeVolumes", 0) >= 1


def test_ec2_created_snapshot_reads_as_empty(ebs: Any, ec2: Any) -> None:
    """A snapshot moto made from an (empty) EC2 volume is readable through EBS direct APIs."""
    vol = ec2.create_volume(Size=2, AvailabilityZone="us-east-1a")
    snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]
    listed = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert listed["Blocks"] == [] and listed["VolumeSize"] == 2
    child = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=snap)["SnapshotId"]
    assert ec2_state(ec2, child) == "pending"
