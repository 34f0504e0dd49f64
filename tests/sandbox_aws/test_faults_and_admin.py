"""Fault injection and the admin endpoint: throttling, 5xx, not-found window, latency, access
denied, scripted failures, per-snapshot rate limit, empty pages, stats."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from sandbox_aws_helpers import BLOCK, error_of, list_all, put, write_snapshot

from sandbox.aws.admin_client import AdminError


def test_throttling_has_the_aws_shape(aws: Any, ebs: Any) -> None:
    aws.admin.set_faults(throttle_fraction=1.0)
    with pytest.raises(ClientError) as exc:
        ebs.start_snapshot(VolumeSize=1)
    assert error_of(exc) == ("RequestThrottledException", "ACCOUNT_THROTTLED", 400)
    assert aws.admin.stats()["faults_injected"]["RequestThrottledException"] >= 1


def test_botocore_retries_injected_throttles_and_5xx(aws: Any) -> None:
    """With a fraction of failures, a client with retries gets through (faults are transient)."""
    aws.admin.set_faults(throttle_fraction=0.3, server_error_fraction=0.2, seed=3)
    retrying = aws.client("ebs", max_attempts=10)
    sid = retrying.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i in range(10):
        put(retrying, sid, i, bytes([i]) * BLOCK)
    injected = aws.admin.stats()["faults_injected"]
    assert sum(injected.values()) > 0


@pytest.mark.parametrize(
    ("status", "code"), [(500, "InternalServerException"), (503, "ServiceUnavailableException")]
)
def test_server_errors(aws: Any, ebs: Any, status: int, code: str) -> None:
    aws.admin.set_faults(server_error_fraction=1.0, server_error_status=status,
                         operations=["PutSnapshotBlock"])
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]  # not in `operations`: unaffected
    with pytest.raises(ClientError) as exc:
        put(ebs, sid, 0, b"\1" * BLOCK)
    assert error_of(exc) == (code, None, status)


def test_snapshot_does_not_exist_right_after_start(aws: Any, ebs: Any) -> None:
    aws.admin.set_faults(not_found_after_start_seconds=0.6)
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    with pytest.raises(ClientError) as exc:
        put(ebs, sid, 0, b"\1" * BLOCK)
    assert error_of(exc) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404)
    time.sleep(0.7)
    put(ebs, sid, 0, b"\1" * BLOCK)


def test_added_latency(aws: Any, ebs: Any) -> None:
    aws.admin.set_faults(latency_ms=150, operations=["StartSnapshot"])
    t0 = time.monotonic()
    ebs.start_snapshot(VolumeSize=1)
    assert time.monotonic() - t0 >= 0.15


def test_answer_held_after_the_call_took_effect(aws: Any, ebs: Any, ec2: Any) -> None:
    """respond_after_seconds: the snapshot exists before its StartSnapshot answer arrives (the
    window where a client dies after AWS acted), so a short client timeout loses the answer."""
    aws.admin.set_faults(respond_after_seconds={"StartSnapshot": 2.0})
    impatient = aws.client("ebs", max_attempts=1, read_timeout=0.5)
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    with pytest.raises(ReadTimeoutError):
        impatient.start_snapshot(VolumeSize=1)
    after = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert len(after - before) == 1


def test_slow_ec2_action(aws: Any, ec2: Any) -> None:
    aws.admin.set_faults(slow_actions={"ec2:DescribeSnapshots": 0.3})
    t0 = time.monotonic()
    ec2.describe_snapshots(OwnerIds=["self"])
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    ec2.describe_volumes()
    assert time.monotonic() - t0 < 0.3


def test_access_denied_and_scripted_failures(aws: Any, ebs: Any) -> None:
    aws.admin.set_faults(
        access_denied_operations=["ListSnapshotBlocks"],
        fail_next=[{"operation": "StartSnapshot", "code": "ServiceQuotaExceededException",
                    "reason": "DEPENDENCY_SERVICE_QUOTA_EXCEEDED", "count": 2}],
    )
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            ebs.start_snapshot(VolumeSize=1)
        assert error_of(exc) == (
            "ServiceQuotaExceededException", "DEPENDENCY_SERVICE_QUOTA_EXCEEDED", 402)
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]  # the third one passes
    with pytest.raises(ClientError) as exc:
        ebs.list_snapshot_blocks(SnapshotId=sid)
    assert error_of(exc) == ("AccessDeniedException", "UNAUTHORIZED_ACCOUNT", 403)


def test_per_snapshot_put_rate_limit(aws: Any, ebs: Any) -> None:
    aws.admin.set_faults(put_rate_limit_per_snapshot=3)
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    reasons: list[Any] = []
    for i in range(8):
        try:
            put(ebs, sid, i, bytes([i]) * BLOCK)
            reasons.append("ok")
        except ClientError as e:
            reasons.append(e.response.get("Reason"))
    assert "RESOURCE_LEVEL_THROTTLE" in reasons
    assert reasons[0] == "ok"


def test_small_and_empty_pages_still_list_everything(aws: Any, ebs: Any, ec2: Any) -> None:
    blocks = {i: bytes([i + 1]) * BLOCK for i in range(0, 40, 3)}
    sid = write_snapshot(ebs, ec2, blocks)
    aws.admin.set_faults(list_max_page=4, empty_page_fraction=0.5, seed=1)
    pages = 0
    token = None
    seen: list[int] = []
    while True:
        kw = {"SnapshotId": sid, **({"NextToken": token} if token else {})}
        page = ebs.list_snapshot_blocks(**kw)
        pages += 1
        assert len(page["Blocks"]) <= 4
        seen.extend(b["BlockIndex"] for b in page["Blocks"])
        token = page.get("NextToken")
        if not token:
            break
    assert seen == sorted(blocks)
    assert pages > len(blocks) // 4
    assert [b["BlockIndex"] for b in list_all(ebs, sid)] == sorted(blocks)


def test_admin_rejects_bad_settings(aws: Any) -> None:
    with pytest.raises(AdminError):
        aws.admin.set_faults(no_such_knob=1)
    with pytest.raises(AdminError):
        aws.admin.set_faults(throttle_fraction=2.0)
    with pytest.raises(AdminError):
        aws.admin.set_faults(fail_next=[{"operation": "Nope", "code": "ValidationException"}])
    with pytest.raises(AdminError):
        aws.admin.set_faults(respond_after_seconds={"Nope": 1})
    with pytest.raises(AdminError):
        aws.admin.set_faults(slow_actions={"ec2:DescribeSnapshots": -1})
    assert aws.admin.faults()["throttle_fraction"] == 0.0


def test_stats_count_operations_and_blocks(aws: Any, ebs: Any, ec2: Any) -> None:
    aws.admin.reset_stats()
    sid = write_snapshot(ebs, ec2, {0: b"\1" * BLOCK, 1: b"\2" * BLOCK})
    put_again = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, put_again, 0, b"\1" * BLOCK)
    put(ebs, put_again, 0, b"\1" * BLOCK)
    stats = aws.admin.stats()
    assert stats["requests"]["StartSnapshot"] == 2
    assert stats["requests"]["PutSnapshotBlock"] == 4
    assert stats["requests"]["CompleteSnapshot"] == 1
    assert stats["put_blocks_by_snapshot"] == {sid: 2, put_again: 2}
    assert stats["put_bytes"] == 4 * BLOCK
    assert stats["stored_bytes"] == stats["stored_blocks"] * BLOCK
    assert stats["snapshots_by_status"]["completed"] >= 1
    assert stats["requests"]["ec2:DescribeSnapshots"] >= 1


def test_clock_admin(aws: Any) -> None:
    before = aws.admin.clock()["now"]
    after = aws.admin.advance_clock(3600)["now"]
    assert after - before >= 3600
    assert aws.admin.set_clock_speed(2.0)["speed"] == 2.0
    assert aws.admin.faults()["clock_speed"] == 2.0


def test_fractions_are_spread_evenly(aws: Any, ebs: Any) -> None:
    """Any n eligible calls meet floor(n*f) or ceil(n*f) injected faults, whatever the seed."""
    for seed in (1, 2, 3):
        aws.admin.set_faults(throttle_fraction=0.25, operations=["StartSnapshot"], seed=seed)
        throttles = 0
        for _ in range(8):
            try:
                ebs.start_snapshot(VolumeSize=1)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "RequestThrottledException"
                throttles += 1
        assert throttles == 2, seed
