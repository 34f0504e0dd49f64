"""Read an EBS snapshot back through the EBS direct APIs (verification, tests, the demo).

ListSnapshotBlocks lists every block of the snapshot including those inherited from its parents,
so reading one snapshot rebuilds the whole volume at that point in time; blocks not listed read as
zeros. Each GetSnapshotBlock answer is checked against its SHA-256 before it is written out.
botocore has no paginator for EBS, so NextToken is followed by hand (pages may be empty).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.ebs.client import TRANSPORT_ERRORS, EbsCallError, is_transient

T = TypeVar("T")
READ_ERRORS: tuple[type[Exception], ...] = (ClientError, *TRANSPORT_ERRORS)


def _retrying(fn: Callable[[], T]) -> T:
    """Short retry for throttling/5xx/connection faults (reads are idempotent)."""
    retrying = Retrying(
        stop=stop_after_attempt(6),
        wait=wait_random_exponential(multiplier=0.1, max=3),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )
    return retrying(fn)


@dataclass(frozen=True)
class BlockRef:
    index: int
    token: str


@dataclass
class ReadStats:
    blocks_listed: int = 0
    blocks_read: int = 0
    bytes_read: int = 0


class ChecksumMismatch(Exception):
    def __init__(self, snapshot_id: str, index: int) -> None:
        super().__init__(f"snapshot {snapshot_id} block {index}: data does not match its SHA-256")
        self.snapshot_id = snapshot_id
        self.index = index


def list_snapshot_blocks(ebs: Any, snapshot_id: str, page_size: int = 10_000) -> Iterator[BlockRef]:
    """Every block of a snapshot (with parents'), ascending, following NextToken to the end."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"SnapshotId": snapshot_id, "MaxResults": page_size}
        if token:
            kwargs["NextToken"] = token
        call = functools.partial(ebs.list_snapshot_blocks, **kwargs)
        try:
            resp = _retrying(call)
        except READ_ERRORS as exc:
            raise EbsCallError.from_exception("ListSnapshotBlocks", exc) from exc
        for block in resp.get("Blocks", []):
            yield BlockRef(int(block["BlockIndex"]), str(block["BlockToken"]))
        token = resp.get("NextToken")
        if not token:
            return


def get_block(ebs: Any, snapshot_id: str, ref: BlockRef) -> bytes:
    """One block, verified against the SHA-256 EBS returns with it."""

    def fetch() -> tuple[dict[str, Any], bytes]:
        resp = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=ref.index, BlockToken=ref.token
        )
        return resp, resp["BlockData"].read()

    try:
        resp, data = _retrying(fetch)
    except READ_ERRORS as exc:
        raise EbsCallError.from_exception("GetSnapshotBlock", exc) from exc
    expected = resp.get("Checksum")
    if expected and base64.b64decode(expected) != hashlib.sha256(data).digest():
        raise ChecksumMismatch(snapshot_id, ref.index)
    return data


def read_snapshot_into(
    ebs: Any,
    snapshot_id: str,
    size_bytes: int,
    out: bytearray | Path,
    max_workers: int = 16,
) -> ReadStats:
    """Rebuild the first `size_bytes` of the volume into a bytearray or a file (sparse zeros)."""
    stats = ReadStats()
    lock = threading.Lock()
    fd = -1
    if isinstance(out, Path):
        fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, size_bytes)
    else:
        if len(out) < size_bytes:
            out.extend(bytes(size_bytes - len(out)))
        view = memoryview(out)

    def fetch(ref: BlockRef) -> None:
        offset = ref.index * EBS_BLOCK_SIZE
        if offset >= size_bytes:
            return
        data = get_block(ebs, snapshot_id, ref)[: size_bytes - offset]
        if fd >= 0:
            os.pwrite(fd, data, offset)
        else:
            view[offset : offset + len(data)] = data
        with lock:
            stats.blocks_read += 1
            stats.bytes_read += len(data)

    try:
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ebs-get") as pool:
            pending = []
            for ref in list_snapshot_blocks(ebs, snapshot_id):
                stats.blocks_listed += 1
                pending.append(pool.submit(fetch, ref))
                if len(pending) >= max_workers * 4:
                    for fut in pending:
                        fut.result()
                    pending.clear()
            for fut in pending:
                fut.result()
    finally:
        if fd >= 0:
            os.close(fd)
    return stats


def read_snapshot(ebs: Any, snapshot_id: str, size_bytes: int, max_workers: int = 16) -> bytes:
    buf = bytearray(size_bytes)
    read_snapshot_into(ebs, snapshot_id, size_bytes, buf, max_workers)
    return bytes(buf)
