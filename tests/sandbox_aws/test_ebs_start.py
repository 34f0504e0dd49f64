"""StartSnapshot: response shape, parameter rules, parents, ClientToken idempotency, quota."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sandbox_aws_helpers import BLOCK, error_of, put, rand_block, wait_state, write_snapshot


def test_start_snapshot_answers_like_aws(ebs: Any) -> None:
    r = ebs.start_snapshot(
        VolumeSize=3, Description="disk 0", Tags=[{"Key": "k", "Value": "v"}], Timeout=30
    )
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert r["SnapshotId"].startswith("snap-")
    assert r["Status"] == "pending"
    assert r["VolumeSize"] == 3
    assert r["BlockSize"] == BLOCK
    assert r["OwnerId"].isdigit()
    assert r["Description"] == "disk 0"
    assert r["Tags"] == [{"Key": "k", "Value": "v"}]
    assert "ParentSnapshotId" not in r
    assert r["StartTime"].year >= 2024


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"VolumeSize": 65537}, "INVALID_VOLUME_SIZE"),
        ({"VolumeSize": 1, "Timeout": 4321}, "INVALID_PARAMETER_VALUE"),
        ({"VolumeSize": 1, "Tags": [{"Key": f"k{i}", "Value": ""} for i in range(51)]},
         "INVALID_TAG"),
        ({"VolumeSize": 1, "Tags": [{"Key": "aws:reserved", "Value": "x"}]}, "INVALID_TAG"),
        ({"VolumeSize": 1, "Description": "x" * 256}, "INVALID_PARAMETER_VALUE"),
        ({"VolumeSize": 1, "ClientToken": "t" * 65}, "INVALID_PARAMETER_VALUE"),
        ({"VolumeSize": 1, "KmsKeyArn": "not-an-arn"}, "INVALID_CUSTOMER_KEY"),
    ],
)
def test_start_snapshot_rejects_bad_parameters(ebs: Any, kwargs: dict[str, Any],
                                               reason: str) -> None:
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(**kwargs)
    assert error_of(exc) == ("ValidationException", reason, 400)


def test_botocore_enforces_the_model_minimums(ebs: Any) -> None:
    """VolumeSize >= 1 and Timeout >= 10 are checked by botocore before any request."""
    from botocore.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        ebs.start_snapshot(VolumeSize=0)
    with pytest.raises(ParamValidationError):
        ebs.start_snapshot(VolumeSize=1, Timeout=9)


def test_parent_must_exist_and_be_completed(ebs: Any, ec2: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId="snap-0000000000000dead")
    assert error_of(exc) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404)

    pending = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=pending)
    assert error_of(exc)[:2] == ("ValidationException", "INVALID_PARAMETER_VALUE")


def test_child_volume_size_rules_and_encrypted_with_parent(ebs: Any, ec2: Any) -> None:
    parent = write_snapshot(ebs, ec2, {}, volume_size=4)
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=3, ParentSnapshotId=parent)
    assert error_of(exc) == ("ValidationException", "INVALID_VOLUME_SIZE", 400)
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=4, ParentSnapshotId=parent, Encrypted=True)
    assert error_of(exc) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
    same = ebs.start_snapshot(VolumeSize=4, ParentSnapshotId=parent)
    bigger = ebs.start_snapshot(VolumeSize=8, ParentSnapshotId=parent)
    assert same["ParentSnapshotId"] == parent == bigger["ParentSnapshotId"]
    assert bigger["VolumeSize"] == 8


def test_child_of_a_grown_volume_can_write_beyond_the_parent(ebs: Any, ec2: Any) -> None:
    rng = random.Random(7)
    parent = write_snapshot(ebs, ec2, {0: rand_block(rng)}, volume_size=1)
    child = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=parent)["SnapshotId"]
    put(ebs, child, 2048 + 5, rand_block(rng))  # index only valid in a 2 GiB volume


def test_client_token_same_params_same_snapshot(ebs: Any) -> None:
    token = str(uuid.uuid4())
    a = ebs.start_snapshot(VolumeSize=2, ClientToken=token, Tags=[{"Key": "a", "Value": "1"}])
    b = ebs.start_snapshot(VolumeSize=2, ClientToken=token, Tags=[{"Key": "a", "Value": "1"}])
    assert a["SnapshotId"] == b["SnapshotId"]
    assert b["Status"] == "pending"
    other = ebs.start_snapshot(VolumeSize=2, ClientToken=str(uuid.uuid4()))
    assert other["SnapshotId"] != a["SnapshotId"]


@pytest.mark.parametrize(
    "changed",
    [{"VolumeSize": 3}, {"Description": "other"}, {"Timeout": 90},
     {"Tags": [{"Key": "a", "Value": "2"}]}],
)
def test_client_token_reused_with_other_params_conflicts(ebs: Any, changed: dict[str, Any]) -> None:
    token = str(uuid.uuid4())
    base: dict[str, Any] = {"VolumeSize": 2, "Tags": [{"Key": "a", "Value": "1"}]}
    ebs.start_snapshot(ClientToken=token, **base)
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(ClientToken=token, **{**base, **changed})
    assert error_of(exc)[0::2] == ("ConflictException", 409)


def test_client_token_replay_returns_completed_state(ebs: Any, ec2: Any) -> None:
    token = str(uuid.uuid4())
    sid = write_snapshot(ebs, ec2, {}, ClientToken=token)
    again = ebs.start_snapshot(VolumeSize=1, ClientToken=token)
    assert again["SnapshotId"] == sid
    assert again["Status"] == "completed"


def test_pending_snapshot_quota(aws: Any, ebs: Any, ec2: Any) -> None:
    pending = sum(1 for s in aws.admin.snapshots() if s["Status"] == "pending")
    aws.admin.set_faults(pending_quota=pending + 2)
    token = str(uuid.uuid4())
    first = ebs.start_snapshot(VolumeSize=1, ClientToken=token)["SnapshotId"]
    ebs.start_snapshot(VolumeSize=1)
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=1)
    assert error_of(exc) == ("ConcurrentLimitExceededException", None, 400)
    # An idempotent replay is not a new snapshot: the quota does not refuse it.
    assert ebs.start_snapshot(VolumeSize=1, ClientToken=token)["SnapshotId"] == first
    aws.admin.set_faults(pending_quota_error="ServiceQuotaExceededException")
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=1)
    assert error_of(exc) == (
        "ServiceQuotaExceededException", "DEPENDENCY_SERVICE_QUOTA_EXCEEDED", 402)
    # A completed snapshot frees its slot (a sealing one still counts: it is still pending).
    ebs.complete_snapshot(SnapshotId=first, ChangedBlocksCount=0)
    wait_state(ec2, first, "completed")
    ebs.start_snapshot(VolumeSize=1)


def test_encrypted_snapshot_and_child_inherits(ebs: Any, ec2: Any) -> None:
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    parent = write_snapshot(ebs, ec2, {}, Encrypted=True, KmsKeyArn=arn)
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)
    assert child["KmsKeyArn"] == arn
    desc = ec2.describe_snapshots(SnapshotIds=[parent, child["SnapshotId"]])["Snapshots"]
    assert all(s["Encrypted"] for s in desc)
