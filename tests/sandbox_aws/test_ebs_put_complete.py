"""PutSnapshotBlock and CompleteSnapshot: validation, writes only while pending, the LINEAR
checksum, asynchronous sealing and the Timeout rule."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sandbox_aws_helpers import (
    BLOCK,
    SEALING_S,
    b64sha,
    complete,
    ec2_state,
    error_of,
    linear,
    put,
    rand_block,
    read_volume,
    wait_state,
)


def test_put_echoes_checksum_with_201(ebs: Any) -> None:
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = rand_block(random.Random(1))
    r = put(ebs, sid, 3, data, Progress=10)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert r["Checksum"] == b64sha(data)
    assert r["ChecksumAlgorithm"] == "SHA256"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda kw: kw.update(DataLength=4096, BlockData=b"x" * 4096,
                              Checksum=b64sha(b"x" * 4096)), "INVALID_PARAMETER_VALUE"),
        (lambda kw: kw.update(Checksum=b64sha(b"other")), "INVALID_PARAMETER_VALUE"),
        (lambda kw: kw.update(ChecksumAlgorithm="MD5"), "INVALID_PARAMETER_VALUE"),
        (lambda kw: kw.update(BlockData=b"\0" * (BLOCK - 1)), "INVALID_PARAMETER_VALUE"),
        (lambda kw: kw.update(BlockIndex=2048), "INVALID_BLOCK"),
        (lambda kw: kw.update(Progress=101), "INVALID_PARAMETER_VALUE"),
    ],
)
def test_put_validation(ebs: Any, mutate: Any, reason: str) -> None:
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = rand_block(random.Random(2))
    kw: dict[str, Any] = dict(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BLOCK,
                              Checksum=b64sha(data), ChecksumAlgorithm="SHA256")
    mutate(kw)
    with pytest.raises(ClientError) as exc:
        ebs.put_snapshot_block(**kw)
    assert error_of(exc) == ("ValidationException", reason, 400)
    # Nothing was written: completing with zero blocks is accepted.
    assert ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0)["Status"] == "pending"


def test_put_to_unknown_snapshot(ebs: Any) -> None:
    with pytest.raises(ClientError) as exc:
        put(ebs, "snap-00000000000000bad", 0, b"\0" * BLOCK)
    assert error_of(exc) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404)
    with pytest.raises(ClientError) as exc:
        put(ebs, "snap-NOT-HEX", 0, b"\0" * BLOCK)
    assert error_of(exc) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)


def test_reput_overwrites_and_counts_once(ebs: Any, ec2: Any) -> None:
    rng = random.Random(3)
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    first, second, other = rand_block(rng), rand_block(rng), rand_block(rng)
    put(ebs, sid, 9, first)
    put(ebs, sid, 4, other)
    put(ebs, sid, 9, second)
    final = {9: second, 4: other}
    with pytest.raises(ClientError) as exc:  # 3 PUTs but 2 distinct blocks
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3)
    assert error_of(exc) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
    stale = {9: first, 4: other}
    with pytest.raises(ClientError) as exc:  # the aggregate must cover the latest data
        complete(ebs, sid, stale)
    assert error_of(exc) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
    assert complete(ebs, sid, final) == "pending"
    wait_state(ec2, sid, "completed")
    assert read_volume(ebs, sid) == final


def test_linear_checksum_is_ordered_by_index_not_by_write_order(ebs: Any) -> None:
    rng = random.Random(4)
    blocks = {i: rand_block(rng) for i in (7, 2, 5)}
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i, data in blocks.items():  # written in 7, 2, 5 order
        put(ebs, sid, i, data)
    in_write_order = b"".join(hashlib.sha256(d).digest() for d in blocks.values())
    wrong = base64.b64encode(hashlib.sha256(in_write_order).digest()).decode()
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3, Checksum=wrong,
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert error_of(exc)[0] == "ValidationException"
    assert complete(ebs, sid, blocks) == "pending"


def test_complete_needs_sha256_and_linear(ebs: Any) -> None:
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0, Checksum=linear({}),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="TREE")
    assert error_of(exc) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)


def test_sealing_then_completed_and_no_more_writes(aws: Any, ebs: Any, ec2: Any) -> None:
    aws.admin.set_faults(complete_delay_seconds=SEALING_S)
    rng = random.Random(5)
    blocks = {0: rand_block(rng)}
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, sid, 0, blocks[0])
    r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1, Checksum=linear(blocks),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert r["Status"] == "pending"
    assert ec2_state(ec2, sid) == "pending"
    with pytest.raises(ClientError) as exc:  # sealing: still pending, but closed for writes
        put(ebs, sid, 1, rand_block(rng))
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:  # and not readable yet
        ebs.list_snapshot_blocks(SnapshotId=sid)
    assert error_of(exc)[0] == "ValidationException"
    wait_state(ec2, sid, "completed")
    with pytest.raises(ClientError) as exc:
        put(ebs, sid, 0, blocks[0])
    assert error_of(exc) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)
    # A retried CompleteSnapshot with the same parameters is answered, not refused.
    again = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1, Checksum=linear(blocks),
                                  ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert again["Status"] == "completed"
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=5)
    assert error_of(exc)[0] == "ValidationException"


def test_reads_need_a_completed_snapshot(ebs: Any) -> None:
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, sid, 0, b"\1" * BLOCK)
    with pytest.raises(ClientError) as exc:
        ebs.list_snapshot_blocks(SnapshotId=sid)
    assert error_of(exc) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)
    with pytest.raises(ClientError) as exc:
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockToken="AAAA")
    assert error_of(exc) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)


def test_timeout_moves_idle_snapshot_to_error(aws: Any, ebs: Any, ec2: Any) -> None:
    sid = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    busy = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    aws.admin.advance_clock(9 * 60)
    put(ebs, busy, 0, b"\2" * BLOCK)  # activity restarts the timeout
    aws.admin.advance_clock(2 * 60)
    assert ec2_state(ec2, sid) == "error"
    assert ec2_state(ec2, busy) == "pending"
    with pytest.raises(ClientError) as exc:
        put(ebs, sid, 0, b"\2" * BLOCK)
    assert error_of(exc) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)
    with pytest.raises(ClientError) as exc:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0)
    assert error_of(exc)[0] == "ValidationException"
    assert complete(ebs, busy, {0: b"\2" * BLOCK}) == "pending"


def test_timeout_with_a_fast_clock(aws: Any, ebs: Any, ec2: Any) -> None:
    """Default Timeout of 60 minutes passes in about a second at 4000x."""
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    aws.admin.set_faults(clock_speed=4000.0)
    deadline = time.monotonic() + 5
    while ec2_state(ec2, sid) == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ec2_state(ec2, sid) == "error"


def test_concurrent_same_block_puts_conflict_or_succeed(ebs: Any, ec2: Any) -> None:
    """Concurrent writes to one index end with one of them stored, never a mix."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(6)
    datas = [rand_block(rng) for _ in range(6)]
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]

    def attempt(d: bytes) -> str:
        try:
            put(ebs, sid, 1, d)
            return "ok"
        except ClientError as e:
            return str(e.response.get("Reason"))

    with ThreadPoolExecutor(6) as ex:
        outcomes = list(ex.map(attempt, datas))
    assert "ok" in outcomes
    assert set(outcomes) <= {"ok", "CONFLICTING_BLOCK_UPDATE"}
    # Whatever won, the stored block must be one of the written ones, checksums intact.
    for d in datas:
        try:
            assert complete(ebs, sid, {1: d}) == "pending"
            break
        except ClientError:
            continue
    else:
        raise AssertionError("no written block matched the stored one")
    wait_state(ec2, sid, "completed")
    assert read_volume(ebs, sid)[1] in datas
