"""snapship.launch.ec2 against the local AWS: launch from a group's snapshots, never twice."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from snapship.ebs.client import EbsCallError
from snapship.launch import ec2 as launch
from snapship.launch.messages import GroupDisk, LaunchSettings, LaunchTarget, VolumeSettings
from tests.sandbox_aws.sandbox_aws_helpers import BLOCK, read_volume, write_snapshot


def _target(ebs: Any, ec2: Any, **settings: Any) -> tuple[LaunchTarget, dict[str, dict]]:
    boot_blocks = {0: b"\x11" * BLOCK, 3: b"\x12" * BLOCK}
    data_blocks = {1: b"\x21" * BLOCK}
    boot = write_snapshot(ebs, ec2, boot_blocks, volume_size=2)
    data = write_snapshot(ebs, ec2, data_blocks, volume_size=1)
    sid = f"s-{uuid.uuid4().hex[:8]}"
    target = LaunchTarget(
        source_server_id=sid,
        vm_name="web-01",
        group_id=f"{sid}/r000001-a1",
        # Listed data disk first: the boot disk (lowest device key) must still be /dev/sda1.
        disks=[GroupDisk(2001, data, 1), GroupDisk(2000, boot, 2)],
        settings=LaunchSettings(**settings),
        instance_type="t3.micro",
        boot_mode="legacy-bios",
        kind="test",
        tags={"app": "shop"},
    )
    return target, {boot: boot_blocks, data: data_blocks}


def test_launch_from_group_boot_disk_first_volumes_traceable(ebs: Any, ec2: Any) -> None:
    target, content = _target(
        ebs, ec2, volumes=[VolumeSettings(2001, "io1", iops=200)]
    )
    image = launch.register_image(ec2, "job-1", target)
    iid = launch.run_instance(ec2, "job-1", target, image)
    view = launch.wait_running(ec2, iid, sleep=lambda s: None)
    assert view.state == "running" and view.launch_time
    vols = ec2.describe_volumes(VolumeIds=list(view.volumes.values()))["Volumes"]
    by_id = {v["VolumeId"]: v for v in vols}
    root = by_id[view.volumes["/dev/sda1"]]
    second = by_id[view.volumes["/dev/sdb"]]
    assert root["SnapshotId"] == target.disks[1].snapshot_id  # device key 2000
    assert second["SnapshotId"] == target.disks[0].snapshot_id
    assert second["VolumeType"] == "io1" and second["Iops"] == 200
    assert root["VolumeType"] == "gp3"
    for vol in (root, second):  # the instance's disks, rebuilt from their snapshots
        assert read_volume(ebs, vol["SnapshotId"]) == content[vol["SnapshotId"]]
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags[launch.TAG_SOURCE_SERVER] == target.source_server_id
    assert tags[launch.TAG_JOB] == "job-1" and tags[launch.TAG_LAUNCH_TYPE] == "test"
    assert tags["app"] == "shop"


def test_repeated_launch_of_a_job_returns_the_same_image_and_instance(ebs: Any, ec2: Any) -> None:
    target, _ = _target(ebs, ec2)
    image = launch.register_image(ec2, "job-2", target)
    iid = launch.run_instance(ec2, "job-2", target, image)
    # A worker killed after these calls resumes the job: the same calls again.
    assert launch.register_image(ec2, "job-2", target) == image
    assert launch.run_instance(ec2, "job-2", target, image) == iid
    mine = ec2.describe_instances(
        Filters=[{"Name": f"tag:{launch.TAG_SOURCE_SERVER}", "Values": [target.source_server_id]}]
    )
    assert [i["InstanceId"] for r in mine["Reservations"] for i in r["Instances"]] == [iid]
    # Another job launches another instance.
    other = launch.run_instance(ec2, "job-3", target, launch.register_image(ec2, "job-3", target))
    assert other != iid


def test_terminate_removes_instance_volumes_and_image_but_not_the_snapshots(
    ebs: Any, ec2: Any
) -> None:
    target, content = _target(ebs, ec2)
    image = launch.register_image(ec2, "job-4", target)
    iid = launch.run_instance(ec2, "job-4", target, image)
    view = launch.describe_instance(ec2, iid)
    assert launch.terminate_instances(ec2, [iid]) == [iid]
    assert launch.describe_instance(ec2, iid).state == "terminated"
    assert ec2.describe_volumes(
        Filters=[{"Name": "volume-id", "Values": list(view.volumes.values())}]
    )["Volumes"] == []
    assert ec2.describe_images(Filters=[{"Name": "image-id", "Values": [image]}])["Images"] == []
    for sid, blocks in content.items():
        assert read_volume(ebs, sid) == blocks
    assert launch.terminate_instances(ec2, [iid]) == [iid]  # again: a no-op


def test_deleted_subnet_is_a_permanent_failure_with_a_reason(ebs: Any, ec2: Any) -> None:
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    assert launch.subnet_exists(ec2, subnet)
    ec2.delete_subnet(SubnetId=subnet)
    assert not launch.subnet_exists(ec2, subnet)
    target, _ = _target(ebs, ec2, subnet_id=subnet)
    image = launch.register_image(ec2, "job-5", target)
    with pytest.raises(EbsCallError) as exc:
        launch.run_instance(ec2, "job-5", target, image)
    assert not exc.value.retryable
    assert "InvalidSubnetID.NotFound" in str(exc.value) and subnet in str(exc.value)


def test_instance_types_for_right_sizing(ec2: Any) -> None:
    types = launch.instance_types(ec2)
    assert types and all(t.current_generation for t in types)
    assert launch.instance_types(ec2, ["t3.micro"])[0].vcpus == 2
    assert launch.instance_types(ec2, ["x9.nothing"]) == []


def test_client_token_and_image_name_are_stable_and_bounded() -> None:
    token = launch.client_token("job:1/x" * 30, "server" * 40)
    assert token == launch.client_token("job:1/x" * 30, "server" * 40)
    assert len(token) <= 64 and token.isascii()
    assert token != launch.client_token("job:2", "server")
    name = launch.image_name("job:1", "snapship-vc/uuid")
    assert 3 <= len(name) <= 128 and ":" not in name
