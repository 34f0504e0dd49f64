"""SHA-256 per EBS block and the LINEAR aggregate CompleteSnapshot verifies.

EBS checks each PutSnapshotBlock against its base64 SHA-256 and, on CompleteSnapshot, the LINEAR
aggregate: SHA-256 over the concatenated raw 32-byte digests of the blocks written to this snapshot,
in ascending block index order, base64-encoded. Computing both ourselves is the end-to-end check
that what VDDK read is what EBS stored.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from snapship.blocks import EBS_BLOCK_SIZE

ZERO_BLOCK = bytes(EBS_BLOCK_SIZE)
"""One shared all-zero block: comparing against it is a single memcmp."""


@dataclass(frozen=True)
class BlockChecksum:
    """Raw digest (for the aggregate) and its base64 form (for the API)."""

    digest: bytes
    b64: str


def block_checksum(data: bytes | memoryview) -> BlockChecksum:
    """SHA-256 of one block; hashlib releases the GIL for large inputs, so threads parallelise."""
    digest = hashlib.sha256(data).digest()
    return BlockChecksum(digest, base64.b64encode(digest).decode("ascii"))


def b64_digest(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def is_zero_block(data: bytes | memoryview) -> bool:
    """True when every byte is zero. Full blocks compare with the shared zero block (memcmp)."""
    if len(data) == EBS_BLOCK_SIZE:
        return data == ZERO_BLOCK
    raw = bytes(data)
    return raw.count(0) == len(raw)


class LinearAggregate:
    """Streaming LINEAR aggregate: feed digests in strictly ascending block order.

    Streaming (instead of collecting digests and sorting at the end) keeps memory constant for
    multi-TiB disks; the writer submits blocks in ascending order so this is natural.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._count = 0
        self._last = -1

    def add(self, index: int, digest: bytes) -> None:
        if index <= self._last:
            raise ValueError(f"aggregate needs ascending indices ({self._last} then {index})")
        if len(digest) != 32:
            raise ValueError("expected a raw 32-byte SHA-256 digest")
        self._hash.update(digest)
        self._count += 1
        self._last = index

    @property
    def count(self) -> int:
        """Blocks added so far (CompleteSnapshot's ChangedBlocksCount)."""
        return self._count

    def b64(self) -> str:
        return b64_digest(self._hash.copy().digest())


def linear_aggregate(digests_by_index: dict[int, bytes]) -> str:
    """One-shot LINEAR aggregate of {block index: raw digest} (used to cross-check)."""
    agg = LinearAggregate()
    for index in sorted(digests_by_index):
        agg.add(index, digests_by_index[index])
    return agg.b64()
