"""A chain of incremental snapshots rebuilds exactly the volume written, survives the deletion
of its ancestors, and stores each distinct block once."""

from __future__ import annotations

import random
from typing import Any

from botocore.exceptions import ClientError
from sandbox_aws_helpers import BLOCK, rand_block, read_volume, write_snapshot

ZERO = b"\0" * BLOCK
VOLUME_GIB = 1
NBLOCKS = VOLUME_GIB * 2048


def _changes(rng: random.Random, volume: dict[int, bytes], first: bool) -> dict[int, bytes]:
    """Random writes for one run, including zero blocks that overwrite earlier data."""
    delta: dict[int, bytes] = {}
    for index in rng.sample(range(NBLOCKS), 40):
        if not first and index in volume and rng.random() < 0.3:
            delta[index] = ZERO  # the guest zeroed data the parent still holds
        elif rng.random() < 0.15:
            delta[index] = ZERO
        else:
            delta[index] = rand_block(rng)
    if first:  # a parentless upload skips zero blocks, as the pipeline does
        delta = {i: d for i, d in delta.items() if d != ZERO}
    return delta


def test_five_incremental_snapshots_rebuild_the_volume(aws: Any, ebs: Any, ec2: Any) -> None:
    rng = random.Random(2024)
    volume: dict[int, bytes] = {}  # the truth: what a reader of the disk would see
    chain: list[tuple[str, dict[int, bytes]]] = []
    parent: str | None = None
    for run in range(5):
        delta = _changes(rng, volume, first=parent is None)
        extra = {"ParentSnapshotId": parent} if parent else {}
        sid = write_snapshot(ebs, ec2, delta, volume_size=VOLUME_GIB, **extra)
        volume.update(delta)
        chain.append((sid, dict(volume)))
        parent = sid
        assert aws.admin.stats()["put_blocks_by_snapshot"][sid] == len(delta), run
    for sid, expected in chain:
        got = read_volume(ebs, sid)
        image = {i: got.get(i, ZERO) for i in range(NBLOCKS)}
        truth = {i: expected.get(i, ZERO) for i in range(NBLOCKS)}
        assert image == truth, sid


def test_children_survive_parent_deletion_and_blocks_are_deduplicated(
    aws: Any, ebs: Any, ec2: Any
) -> None:
    rng = random.Random(99)
    shared = rand_block(rng)
    base = {0: shared, 1: shared, 2: ZERO, 3: rand_block(rng)}
    before = aws.admin.stats()["stored_blocks"]
    root = write_snapshot(ebs, ec2, base)
    mid = write_snapshot(ebs, ec2, {3: shared, 4: ZERO}, ParentSnapshotId=root)
    leaf = write_snapshot(ebs, ec2, {5: rand_block(rng)}, ParentSnapshotId=mid)
    stats = aws.admin.stats()
    # Distinct contents written: shared, zero, base[3], leaf's block 5 -> at most 4 new files.
    assert stats["stored_blocks"] - before <= 4
    expected_leaf = {0: shared, 1: shared, 2: ZERO, 3: shared, 4: ZERO}
    ec2.delete_snapshot(SnapshotId=mid)
    ec2.delete_snapshot(SnapshotId=root)
    assert aws.admin.sweep() >= 0
    for gone in (root, mid):
        try:
            ebs.list_snapshot_blocks(SnapshotId=gone)
            raise AssertionError(f"{gone} still listed after DeleteSnapshot")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
    got = read_volume(ebs, leaf)
    assert {i: d for i, d in got.items() if i != 5} == expected_leaf
    assert aws.admin.snapshot(leaf)["Status"] == "completed"


def test_deleting_the_only_holder_frees_its_block_files(aws: Any, ebs: Any, ec2: Any) -> None:
    rng = random.Random(5)
    unique = {i: rand_block(rng) for i in range(6)}
    aws.admin.sweep()
    before = aws.admin.stats()["stored_blocks"]
    sid = write_snapshot(ebs, ec2, unique)
    assert aws.admin.stats()["stored_blocks"] == before + 6
    files = sorted(p.name for p in (aws.data_dir / "blocks").rglob("*") if p.is_file())
    assert len(files) == before + 6
    ec2.delete_snapshot(SnapshotId=sid)
    aws.admin.sweep()
    assert aws.admin.stats()["stored_blocks"] == before
    with_files = [p for p in (aws.data_dir / "blocks").rglob("*") if p.is_file()]
    assert len(with_files) == before
    try:
        ebs.list_snapshot_blocks(SnapshotId=sid)
        raise AssertionError("deleted snapshot still readable")
    except ClientError as exc:
        resp: dict[str, Any] = dict(exc.response)
        assert resp["Error"]["Code"] == "ResourceNotFoundException"
        assert resp["Reason"] == "SNAPSHOT_NOT_FOUND"
