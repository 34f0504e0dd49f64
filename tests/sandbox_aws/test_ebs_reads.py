"""ListSnapshotBlocks, ListChangedBlocks and GetSnapshotBlock: order, pages, tokens, lineage."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sandbox_aws_helpers import (
    BLOCK,
    b64sha,
    error_of,
    list_all,
    list_changed_all,
    rand_block,
    read_volume,
    write_snapshot,
)


@pytest.fixture(scope="module")
def many(local_aws: Any) -> tuple[str, dict[int, bytes]]:
    """A completed 1 GiB snapshot with 250 blocks written in random order."""
    ebs, ec2 = local_aws.client("ebs"), local_aws.client("ec2")
    rng = random.Random(11)
    indexes = rng.sample(range(2048), 250)
    zero = b"\0" * BLOCK
    blocks = {i: (zero if n % 5 == 0 else rand_block(rng)) for n, i in enumerate(indexes)}
    return write_snapshot(ebs, ec2, blocks), blocks


def test_list_is_ascending_and_complete_across_pages(ebs: Any, many: Any) -> None:
    sid, blocks = many
    page = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)
    assert len(page["Blocks"]) == 100
    assert page["NextToken"]
    assert page["BlockSize"] == BLOCK
    assert page["VolumeSize"] == 1
    now = datetime.now(UTC)
    assert now + timedelta(days=6) < page["ExpiryTime"] < now + timedelta(days=8)
    listed = [b["BlockIndex"] for b in list_all(ebs, sid, MaxResults=100)]
    assert listed == sorted(blocks)
    assert [b["BlockIndex"] for b in list_all(ebs, sid)] == sorted(blocks)


def test_starting_block_index_and_next_token_precedence(ebs: Any, many: Any) -> None:
    sid, blocks = many
    keys = sorted(blocks)
    start = keys[120] - 1 if keys[120] - 1 not in blocks else keys[120]
    got = [b["BlockIndex"] for b in list_all(ebs, sid, StartingBlockIndex=start, MaxResults=100)]
    assert got == [k for k in keys if k >= start]
    first = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)
    # With NextToken, StartingBlockIndex is ignored.
    second = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100,
                                      NextToken=first["NextToken"], StartingBlockIndex=0)
    assert second["Blocks"][0]["BlockIndex"] == keys[100]


def test_bad_page_token_and_max_results(ebs: Any, many: Any) -> None:
    sid, _ = many
    with pytest.raises(ClientError) as exc:
        ebs.list_snapshot_blocks(SnapshotId=sid, NextToken="Zm9yZ2Vk")
    assert error_of(exc) == ("ValidationException", "INVALID_PAGE_TOKEN", 400)
    with pytest.raises(ClientError) as exc:
        ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=10001)
    assert error_of(exc) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
    other = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)["NextToken"]
    with pytest.raises(ClientError) as exc:  # a token from ListSnapshotBlocks is not a
        ebs.list_changed_blocks(SecondSnapshotId=sid, NextToken=other)  # ListChanged token
    assert error_of(exc) == ("ValidationException", "INVALID_PAGE_TOKEN", 400)


def test_get_block_returns_data_and_checksum(ebs: Any, many: Any) -> None:
    sid, blocks = many
    entry = list_all(ebs, sid)[7]
    got = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=entry["BlockIndex"],
                                 BlockToken=entry["BlockToken"])
    data = got["BlockData"].read()
    assert data == blocks[entry["BlockIndex"]]
    assert got["Checksum"] == b64sha(data)
    assert got["DataLength"] == BLOCK


def test_block_token_is_bound_to_its_block(ebs: Any, many: Any) -> None:
    sid, blocks = many
    a, b = list_all(ebs, sid)[:2]
    with pytest.raises(ClientError) as exc:  # right token, wrong index
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"],
                               BlockToken=a["BlockToken"])
    assert error_of(exc) == ("ValidationException", "INVALID_BLOCK_TOKEN", 400)
    absent = next(i for i in range(2048) if i not in blocks)
    with pytest.raises(ClientError) as exc:
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=absent, BlockToken=a["BlockToken"])
    assert error_of(exc) == ("ValidationException", "INVALID_BLOCK_TOKEN", 400)
    with pytest.raises(ClientError) as exc:
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=a["BlockIndex"],
                               BlockToken="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert error_of(exc) == ("ValidationException", "INVALID_BLOCK_TOKEN", 400)


def test_block_tokens_expire_after_seven_days(aws: Any, ebs: Any, ec2: Any) -> None:
    sid = write_snapshot(ebs, ec2, {3: b"\5" * BLOCK})
    token = list_all(ebs, sid)[0]["BlockToken"]
    aws.admin.advance_clock(7 * 24 * 3600 + 60)
    with pytest.raises(ClientError) as exc:
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=3, BlockToken=token)
    assert error_of(exc) == ("ValidationException", "INVALID_BLOCK_TOKEN", 400)
    fresh = list_all(ebs, sid)[0]["BlockToken"]
    ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=3, BlockToken=fresh)


def test_list_changed_blocks_between_parent_and_child(ebs: Any, ec2: Any) -> None:
    rng = random.Random(12)
    base = {i: rand_block(rng) for i in (1, 2, 3, 10)}
    parent = write_snapshot(ebs, ec2, base)
    delta = {2: rand_block(rng), 10: b"\0" * BLOCK, 50: rand_block(rng), 3: base[3]}
    child = write_snapshot(ebs, ec2, delta, ParentSnapshotId=parent)
    changed = list_changed_all(ebs, child, parent)
    # Rewritten blocks count as changed even when the bytes are equal (block 3), as in AWS.
    assert [c["BlockIndex"] for c in changed] == [2, 3, 10, 50]
    by_index = {c["BlockIndex"]: c for c in changed}
    assert "FirstBlockToken" not in by_index[50]  # only in the second snapshot
    assert {"FirstBlockToken", "SecondBlockToken"} <= set(by_index[2])
    old = ebs.get_snapshot_block(SnapshotId=parent, BlockIndex=2,
                                 BlockToken=by_index[2]["FirstBlockToken"])
    new = ebs.get_snapshot_block(SnapshotId=child, BlockIndex=2,
                                 BlockToken=by_index[2]["SecondBlockToken"])
    assert old["BlockData"].read() == base[2]
    assert new["BlockData"].read() == delta[2]
    # Reversed order: blocks only in the (older) second snapshot still listed, once each.
    reverse = list_changed_all(ebs, parent, child)
    assert [c["BlockIndex"] for c in reverse] == [2, 3, 10, 50]
    assert "SecondBlockToken" not in {c["BlockIndex"]: c for c in reverse}[50]
    # Without FirstSnapshotId: every block of the second snapshot.
    assert [c["BlockIndex"] for c in list_changed_all(ebs, child)] == [1, 2, 3, 10, 50]
    # Identical snapshot on both sides: nothing changed.
    assert list_changed_all(ebs, child, child) == []


def test_list_changed_pages_and_starting_index(ebs: Any, ec2: Any) -> None:
    rng = random.Random(13)
    parent = write_snapshot(ebs, ec2, {i: rand_block(rng) for i in range(0, 300, 2)})
    delta = {i: rand_block(rng) for i in range(1, 301, 2)}
    child = write_snapshot(ebs, ec2, delta, ParentSnapshotId=parent)
    page = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child, MaxResults=100)
    assert len(page["ChangedBlocks"]) == 100 and page["NextToken"]
    assert page["VolumeSize"] == 1 and page["BlockSize"] == BLOCK
    all_changed = [c["BlockIndex"] for c in list_changed_all(ebs, child, parent, MaxResults=100)]
    assert all_changed == sorted(delta)
    tail = list_changed_all(ebs, child, parent, StartingBlockIndex=200)
    assert [c["BlockIndex"] for c in tail] == [i for i in sorted(delta) if i >= 200]


def test_unrelated_snapshots_are_rejected(ebs: Any, ec2: Any) -> None:
    a = write_snapshot(ebs, ec2, {0: b"\1" * BLOCK})
    b = write_snapshot(ebs, ec2, {0: b"\1" * BLOCK})
    with pytest.raises(ClientError) as exc:
        ebs.list_changed_blocks(FirstSnapshotId=a, SecondSnapshotId=b)
    assert error_of(exc) == ("ValidationException", "UNRELATED_SNAPSHOTS", 400)


def test_siblings_share_a_lineage(ebs: Any, ec2: Any) -> None:
    root = write_snapshot(ebs, ec2, {0: b"\1" * BLOCK, 1: b"\2" * BLOCK})
    left = write_snapshot(ebs, ec2, {0: b"\3" * BLOCK}, ParentSnapshotId=root)
    right = write_snapshot(ebs, ec2, {1: b"\4" * BLOCK}, ParentSnapshotId=root)
    assert [c["BlockIndex"] for c in list_changed_all(ebs, right, left)] == [0, 1]
    assert read_volume(ebs, left) == {0: b"\3" * BLOCK, 1: b"\2" * BLOCK}


def test_page_tokens_expire_after_an_hour(aws: Any, ebs: Any, many: Any) -> None:
    sid, _ = many
    token = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)["NextToken"]
    assert ebs.list_snapshot_blocks(SnapshotId=sid, NextToken=token)["Blocks"]
    aws.admin.advance_clock(61 * 60)
    with pytest.raises(ClientError) as exc:
        ebs.list_snapshot_blocks(SnapshotId=sid, NextToken=token)
    assert error_of(exc) == ("ValidationException", "INVALID_PAGE_TOKEN", 400)
