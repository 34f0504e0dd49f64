"""Properties of the extent -> EBS block arithmetic (snapship.blocks)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapship.blocks import (
    EBS_BLOCK_SIZE,
    GIB,
    VDDK_MAX_READ_BYTES,
    ReadRun,
    block_count,
    block_span,
    extents_to_blocks,
    iter_blocks,
    pad_block,
    read_runs,
    volume_size_gib,
)

BS = EBS_BLOCK_SIZE
capacities = st.integers(min_value=1, max_value=40 * BS).map(lambda n: n - n % 1024 or 1024)
extent = st.tuples(st.integers(0, 48 * BS), st.integers(0, 6 * BS))


PATTERN = bytes(range(251)) * (12 * BS // 251 + 1)  # period 251: no block equals another


def _touched_model(extents: list[tuple[int, int]], capacity: int) -> list[int]:
    """Block i is touched iff its byte range, the extent and [0, capacity) all intersect."""
    out = []
    for i in range(block_count(capacity)):
        lo, hi = i * BS, (i + 1) * BS
        for off, length in extents:
            a, b = max(lo, off, 0), min(hi, off + length, capacity)
            if a < b:
                out.append(i)
                break
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(extent, max_size=12), capacities)
def test_extents_widen_to_exactly_the_touched_blocks(
    extents: list[tuple[int, int]], capacity: int
) -> None:
    assert extents_to_blocks(extents, capacity) == _touched_model(extents, capacity)


@given(st.integers(0, 10**15))
def test_block_count_and_volume_size_cover_capacity(capacity: int) -> None:
    n = block_count(capacity)
    assert n * BS >= capacity > (n - 1) * BS or (capacity == 0 and n == 0)
    if capacity <= 65_536 * GIB:
        gib = volume_size_gib(capacity)
        assert gib >= 1
        assert gib * GIB >= capacity
        assert gib == 1 or (gib - 1) * GIB < capacity
        # every shipped (padded) block fits inside the EBS volume
        assert n * BS <= gib * GIB


def test_volume_size_limits() -> None:
    assert volume_size_gib(0) == 1
    assert volume_size_gib(GIB + 1) == 2
    with pytest.raises(ValueError):
        volume_size_gib(65_537 * GIB)


@given(capacities, st.data())
def test_block_span_tail_is_partial(capacity: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, block_count(capacity) - 1))
    offset, length = block_span(index, capacity)
    assert offset == index * BS
    assert 0 < length <= BS
    assert (offset + length == capacity) == (index == block_count(capacity) - 1)
    with pytest.raises(ValueError):
        block_span(block_count(capacity), capacity)


@given(st.binary(max_size=2048))
def test_pad_block_zero_pads(data: bytes) -> None:
    padded = pad_block(data)
    assert len(padded) == BS
    assert padded[: len(data)] == data
    assert padded[len(data) :].count(0) == BS - len(data)


def test_pad_block_rejects_oversize() -> None:
    with pytest.raises(ValueError):
        pad_block(bytes(BS + 1))


@given(st.sets(st.integers(0, 200), max_size=80), st.integers(1, 8))
def test_read_runs_partition_indices_into_bounded_consecutive_runs(
    indices: set[int], blocks_per_read: int
) -> None:
    ordered = sorted(indices)
    runs = read_runs(ordered, blocks_per_read * BS)
    flat = [i for run in runs for i in run.indices]
    assert flat == ordered
    for run in runs:
        assert 1 <= run.count <= blocks_per_read
    # maximal: two adjacent runs are only split when the first one is full or there is a gap
    for a, b in itertools.pairwise(runs):
        assert a.first + a.count < b.first or a.count == blocks_per_read


def test_read_runs_default_cap_is_2_mib_and_rejects_disorder() -> None:
    runs = read_runs(range(10))
    assert [r.count for r in runs] == [4, 4, 2]
    assert all(r.count * BS <= VDDK_MAX_READ_BYTES for r in runs)
    with pytest.raises(ValueError):
        read_runs([3, 2])
    with pytest.raises(ValueError):
        read_runs([1], max_bytes=BS - 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12 * BS).map(lambda n: n - n % 1024 or 1024), st.data())
def test_iter_blocks_reads_runs_and_pads_tail(capacity: int, data: st.DataObject) -> None:
    disk = PATTERN[:capacity]
    indices = sorted(data.draw(st.sets(st.integers(0, block_count(capacity) - 1))))
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return disk[offset : offset + length]

    got = list(iter_blocks(read, indices, capacity))
    assert [i for i, _ in got] == indices
    for index, block in got:
        assert block == pad_block(disk[index * BS : (index + 1) * BS])
    assert all(length <= VDDK_MAX_READ_BYTES for _, length in reads)
    assert len(reads) == len(read_runs(indices))


def test_iter_blocks_short_read_is_an_error() -> None:
    with pytest.raises(OSError):
        list(iter_blocks(lambda off, n: b"x", [0], BS))


def test_read_run_length_clips_to_capacity() -> None:
    run = ReadRun(2, 4)
    assert run.offset == 2 * BS
    assert run.length(3 * BS + 1024) == BS + 1024
