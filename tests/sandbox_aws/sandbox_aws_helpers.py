"""Helpers shared by the local AWS tests (block data, checksums, listing and waiting)."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from typing import Any

BLOCK = 524_288


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear(blocks: dict[int, bytes]) -> str:
    """LINEAR aggregate: SHA-256 over the raw per-block digests in ascending index order."""
    joined = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    return base64.b64encode(hashlib.sha256(joined).digest()).decode()


def rand_block(rng: random.Random) -> bytes:
    """Distinct-looking content: a random 64-byte pattern (randbytes(512 KiB) is slow)."""
    return rng.randbytes(64) * (BLOCK // 64)


def put(ebs: Any, sid: str, index: int, data: bytes, **extra: Any) -> Any:
    return ebs.put_snapshot_block(
        SnapshotId=sid,
        BlockIndex=index,
        BlockData=data,
        DataLength=len(data),
        Checksum=b64sha(data),
        ChecksumAlgorithm="SHA256",
        **extra,
    )


def complete(ebs: Any, sid: str, blocks: dict[int, bytes]) -> str:
    out = ebs.complete_snapshot(
        SnapshotId=sid,
        ChangedBlocksCount=len(blocks),
        Checksum=linear(blocks),
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )
    return str(out["Status"])


def ec2_state(ec2: Any, sid: str) -> str:
    return str(ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"])


SEALING_S = 4.0
"""A sealing delay for tests that look at a snapshot while it is still sealing: long enough that
a loaded 2-core machine still finds it `pending` (0.3-0.4 s was not: a fresh-clone CI run saw
`completed` before its next call)."""


def wait_state(ec2: Any, sid: str, want: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    state = ec2_state(ec2, sid)
    while state != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{sid} stayed {state}, wanted {want}")
        time.sleep(0.02)
        state = ec2_state(ec2, sid)


def write_snapshot(
    ebs: Any, ec2: Any, blocks: dict[int, bytes], volume_size: int = 1, **start: Any
) -> str:
    """Start, write ``blocks``, complete and wait until completed; returns the snapshot id."""
    sid = str(ebs.start_snapshot(VolumeSize=volume_size, **start)["SnapshotId"])
    for index, data in blocks.items():
        put(ebs, sid, index, data)
    assert complete(ebs, sid, blocks) == "pending"
    wait_state(ec2, sid, "completed")
    return sid


def list_all(ebs: Any, sid: str, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        args = dict(kw, SnapshotId=sid)
        if token:
            args["NextToken"] = token
        page = ebs.list_snapshot_blocks(**args)
        out.extend(page["Blocks"])
        token = page.get("NextToken")
        if not token:
            return out


def list_changed_all(ebs: Any, second: str, first: str | None = None, **kw: Any) -> list[Any]:
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        args = dict(kw, SecondSnapshotId=second)
        if first:
            args["FirstSnapshotId"] = first
        if token:
            args["NextToken"] = token
        page = ebs.list_changed_blocks(**args)
        out.extend(page["ChangedBlocks"])
        token = page.get("NextToken")
        if not token:
            return out


def read_volume(ebs: Any, sid: str) -> dict[int, bytes]:
    """Every block of ``sid`` via ListSnapshotBlocks + GetSnapshotBlock, checksums verified."""
    out: dict[int, bytes] = {}
    for b in list_all(ebs, sid):
        got = ebs.get_snapshot_block(
            SnapshotId=sid, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )
        data = got["BlockData"].read()
        assert got["Checksum"] == b64sha(data)
        assert got["ChecksumAlgorithm"] == "SHA256"
        assert got["DataLength"] == BLOCK == len(data)
        out[b["BlockIndex"]] = data
    return out


def error_of(exc_info: Any) -> tuple[str, str | None, int]:
    """(Code, Reason, HTTP status) of a botocore ClientError."""
    resp = exc_info.value.response
    return resp["Error"]["Code"], resp.get("Reason"), resp["ResponseMetadata"]["HTTPStatusCode"]
