"""Block arithmetic between VMware's byte extents, VDDK reads and EBS's 512 KiB blocks.

CBT reports changed areas as (offset, length) byte extents at the disk's own granularity; EBS
snapshots are addressed in fixed 512 KiB blocks; VDDK reads should not exceed 2 MiB per call
(ESXi NFC memory exhaustion otherwise). Everything here is pure so it can be property-tested and
imported from anywhere (workflows included).

Disk capacities are whole KiB, not necessarily multiples of 512 KiB: the last block of such a disk
is partial on the source and is shipped zero-padded to a full 512 KiB block (EBS accepts only full
blocks; the padding lies beyond the volume's logical end on the source and inside the EBS volume,
whose size is rounded up to whole GiB).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

EBS_BLOCK_SIZE = 524_288
"""Bytes in one EBS snapshot block (the only DataLength PutSnapshotBlock accepts)."""

VDDK_MAX_READ_BYTES = 2 * 1024 * 1024
"""Largest read we issue through VDDK in one call."""

GIB = 1 << 30
EBS_MAX_VOLUME_GIB = 65_536


def block_count(capacity_bytes: int) -> int:
    """Number of 512 KiB blocks covering a disk of `capacity_bytes` (last one may be partial)."""
    if capacity_bytes < 0:
        raise ValueError(f"negative capacity {capacity_bytes}")
    return -(-capacity_bytes // EBS_BLOCK_SIZE)


def volume_size_gib(capacity_bytes: int) -> int:
    """EBS `VolumeSize` for a disk: whole GiB rounded up, at least 1 (StartSnapshot's minimum)."""
    if capacity_bytes < 0:
        raise ValueError(f"negative capacity {capacity_bytes}")
    gib = max(1, -(-capacity_bytes // GIB))
    if gib > EBS_MAX_VOLUME_GIB:
        raise ValueError(f"disk of {capacity_bytes} bytes exceeds EBS's {EBS_MAX_VOLUME_GIB} GiB")
    return gib


def extents_to_blocks(extents: Iterable[tuple[int, int]], capacity_bytes: int) -> list[int]:
    """Widen byte extents to the sorted, unique EBS block indices they touch, clipped to capacity.

    Empty extents (length 0) touch nothing; parts beyond the capacity are dropped (CBT never
    reports them, but a shrunk or mis-sized disk must not produce blocks past the end).
    """
    total = block_count(capacity_bytes)
    touched: set[int] = set()
    for offset, length in extents:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid extent ({offset}, {length})")
        end = min(offset + length, capacity_bytes)
        if length == 0 or offset >= end:
            continue
        first = offset // EBS_BLOCK_SIZE
        last = min((end - 1) // EBS_BLOCK_SIZE, total - 1)
        touched.update(range(first, last + 1))
    return sorted(touched)


def block_span(index: int, capacity_bytes: int) -> tuple[int, int]:
    """(offset, length) of block `index` on the source disk; length < 512 KiB for a partial tail."""
    if index < 0 or index >= block_count(capacity_bytes):
        raise ValueError(f"block {index} outside a disk of {capacity_bytes} bytes")
    offset = index * EBS_BLOCK_SIZE
    return offset, min(EBS_BLOCK_SIZE, capacity_bytes - offset)


def pad_block(data: bytes) -> bytes:
    """Zero-pad a (tail) block to exactly 512 KiB; longer input is a caller bug."""
    if len(data) > EBS_BLOCK_SIZE:
        raise ValueError(f"block of {len(data)} bytes is larger than {EBS_BLOCK_SIZE}")
    if len(data) == EBS_BLOCK_SIZE:
        return data
    return bytes(data) + bytes(EBS_BLOCK_SIZE - len(data))


@dataclass(frozen=True)
class ReadRun:
    """Consecutive EBS blocks read from the source with one VDDK call."""

    first: int
    count: int

    @property
    def offset(self) -> int:
        return self.first * EBS_BLOCK_SIZE

    def length(self, capacity_bytes: int) -> int:
        """Bytes to read for this run, the tail clipped to the disk's capacity."""
        return min(self.count * EBS_BLOCK_SIZE, capacity_bytes - self.offset)

    @property
    def indices(self) -> range:
        return range(self.first, self.first + self.count)


def read_runs(indices: Iterable[int], max_bytes: int = VDDK_MAX_READ_BYTES) -> list[ReadRun]:
    """Group ascending block indices into runs of consecutive blocks, each at most `max_bytes`."""
    per_run = max_bytes // EBS_BLOCK_SIZE
    if per_run < 1:
        raise ValueError(f"max_bytes {max_bytes} is smaller than one EBS block")
    runs: list[ReadRun] = []
    first = -1
    count = 0
    previous = -1
    for index in indices:
        if index <= previous:
            raise ValueError(f"block indices must be strictly ascending ({previous} then {index})")
        if count and index == first + count and count < per_run:
            count += 1
        else:
            if count:
                runs.append(ReadRun(first, count))
            first, count = index, 1
        previous = index
    if count:
        runs.append(ReadRun(first, count))
    return runs


def iter_blocks(
    read: Callable[[int, int], bytes],
    indices: Iterable[int],
    capacity_bytes: int,
    max_read_bytes: int = VDDK_MAX_READ_BYTES,
) -> Iterator[tuple[int, bytes]]:
    """Yield (block index, 512 KiB bytes) for `indices`, reading through `read(offset, length)`.

    Reads are grouped into runs of at most `max_read_bytes`; the tail block is zero-padded. Only
    one run is held at a time, so memory stays at one read's worth regardless of the disk size.
    """
    for run in read_runs(indices, max_read_bytes):
        length = run.length(capacity_bytes)
        data = read(run.offset, length)
        if len(data) != length:
            raise OSError(f"short read at offset {run.offset}: {len(data)} of {length} bytes")
        view = memoryview(data)
        for i, index in enumerate(run.indices):
            chunk = view[i * EBS_BLOCK_SIZE : (i + 1) * EBS_BLOCK_SIZE]
            yield index, pad_block(bytes(chunk))


ZERO_BLOCK_SHA256 = bytes.fromhex(
    "07854d2fef297a06ba81685e660c332de36d5d18d546927d30daad6d7fda1541"
)
"""SHA-256 of one all-zero 512 KiB block: a block whose digest is this is a zero block."""


class SourceBlock(NamedTuple):
    """One 512 KiB block as the VDDK reader hands it to the EBS writer: hashed at the source.

    `digest` is the raw SHA-256 of exactly `data` (a full, zero-padded block); `is_zero` is
    derived from it, so the worker neither hashes nor scans the bytes again.

    When the reader process was told which blocks to send (`planned`), it sent them itself:
    `put` is then how the PUT ended (a `snapship.ebs.curl_options.HttpResult`), or None for a
    block the plan did not send; `data` is empty but for a failed PUT, whose bytes the worker
    needs to retry it.
    """

    block_index: int
    data: bytes
    digest: bytes
    is_zero: bool
    planned: bool = False
    put: Any = None

    @classmethod
    def of(cls, block_index: int, data: bytes, digest: bytes) -> SourceBlock:
        return cls(block_index, data, digest, digest == ZERO_BLOCK_SHA256)

    @property
    def checksum_b64(self) -> str:
        """The base64 SHA-256 PutSnapshotBlock's Checksum wants."""
        return base64.b64encode(self.digest).decode("ascii")
