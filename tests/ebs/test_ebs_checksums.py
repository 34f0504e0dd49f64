"""SHA-256 per block, the LINEAR aggregate and zero detection (snapship.checksums)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.checksums import (
    LinearAggregate,
    block_checksum,
    is_zero_block,
    linear_aggregate,
)


@given(st.binary(max_size=4096))
def test_block_checksum_is_sha256_raw_and_base64(data: bytes) -> None:
    c = block_checksum(data)
    assert c.digest == hashlib.sha256(data).digest()
    assert base64.b64decode(c.b64) == c.digest


@given(st.dictionaries(st.integers(0, 10**6), st.binary(min_size=1, max_size=64), max_size=30))
def test_linear_aggregate_is_sha256_over_digests_in_index_order(blocks: dict[int, bytes]) -> None:
    digests = {i: hashlib.sha256(b).digest() for i, b in blocks.items()}
    expected = hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()
    assert base64.b64decode(linear_aggregate(digests)) == expected
    agg = LinearAggregate()
    for i in sorted(digests):
        agg.add(i, digests[i])
    assert agg.count == len(digests)
    assert agg.b64() == linear_aggregate(digests)


def test_linear_aggregate_rejects_out_of_order_and_bad_digests() -> None:
    agg = LinearAggregate()
    agg.add(5, bytes(32))
    with pytest.raises(ValueError):
        agg.add(5, bytes(32))
    with pytest.raises(ValueError):
        agg.add(6, b"short")


def test_order_matters_for_the_aggregate() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert linear_aggregate({0: a, 1: b}) != linear_aggregate({0: b, 1: a})


@given(st.integers(0, EBS_BLOCK_SIZE - 1), st.integers(1, 255))
def test_zero_detection_finds_any_nonzero_byte(position: int, value: int) -> None:
    block = bytearray(EBS_BLOCK_SIZE)
    assert is_zero_block(bytes(block))
    block[position] = value
    assert not is_zero_block(bytes(block))
    assert not is_zero_block(memoryview(block))


@given(st.binary(max_size=100))
def test_zero_detection_for_short_inputs(data: bytes) -> None:
    assert is_zero_block(data) == all(b == 0 for b in data)
