"""The writer, reader and chain semantics against the local AWS endpoint (real HTTP, boto3).

The endpoint checks what AWS checks: per-block SHA-256, ChangedBlocksCount and the LINEAR
aggregate at CompleteSnapshot, parent inheritance, ClientToken idempotency. So a passing
`complete` here is itself a checksum assertion.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pytest

from snapship.blocks import (
    EBS_BLOCK_SIZE,
    block_count,
    extents_to_blocks,
    iter_blocks,
    volume_size_gib,
)
from snapship.ebs.client import AwsClients, EbsCallError
from snapship.ebs.reader import list_snapshot_blocks, read_snapshot, read_snapshot_into
from snapship.ebs.writer import (
    Checkpoint,
    EbsSnapshotWriter,
    SnapshotUpload,
    UploadCancelled,
    WriterSettings,
    client_token,
)

BS = EBS_BLOCK_SIZE
RUN = uuid.uuid4().hex  # the endpoint lives for the session: tokens must not collide
CAPACITY = 24 * BS + 100 * 1024  # not a multiple of 512 KiB: the tail block is partial


def make_disk(seed: int, capacity: int = CAPACITY) -> bytearray:
    """Random data with zero regions (whole zero blocks and a zero block inside data)."""
    rng = random.Random(seed)
    disk = bytearray(rng.randbytes(capacity))
    for index in (1, 2, 7, 15):
        disk[index * BS : (index + 1) * BS] = bytes(BS)
    return disk


def fast(**overrides: Any) -> WriterSettings:
    base: dict[str, Any] = {
        "max_in_flight": 16,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "wait_poll_s": 0.05,
        "not_found_window_s": 10,
    }
    base.update(overrides)
    return WriterSettings(**base)


def ship(
    writer: EbsSnapshotWriter,
    disk: bytearray,
    extents: list[tuple[int, int]],
    parent: str | None,
    token: str,
    upload: SnapshotUpload | None = None,
) -> tuple[SnapshotUpload, Checkpoint]:
    capacity = len(disk)
    indices = extents_to_blocks(extents, capacity)
    up = upload or writer.start(volume_size_gib(capacity), parent, token, {"purpose": "test"})
    assert up.start_status == "pending"
    cp = writer.put_blocks(
        up, iter_blocks(lambda off, n: bytes(disk[off : off + n]), indices, capacity)
    )
    assert writer.complete(up) in ("pending", "completed")
    writer.wait_completed(up.snapshot_id, timeout_s=30)
    return up, cp


def nonzero_blocks(disk: bytearray, indices: list[int]) -> int:
    return sum(1 for i in indices if any(disk[i * BS : (i + 1) * BS]))


def test_first_sync_skips_zeros_and_rebuilds_exactly(aws: Any, clients: AwsClients) -> None:
    disk = make_disk(1)
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    up, cp = ship(writer, disk, [(0, len(disk))], None, client_token(RUN, "d0", "r1"))
    all_blocks = list(range(block_count(len(disk))))
    assert cp.counters.zero_blocks_skipped == 4
    stats = aws.admin.stats()
    assert stats["put_blocks_by_snapshot"][up.snapshot_id] == nonzero_blocks(disk, all_blocks)
    assert stats["put_blocks"] == cp.counters.blocks_sent
    listed = [ref.index for ref in list_snapshot_blocks(clients.ebs, up.snapshot_id)]
    assert 1 not in listed and 0 in listed and listed == sorted(listed)
    assert read_snapshot(clients.ebs, up.snapshot_id, len(disk)) == bytes(disk)


def test_incremental_overwrites_parent_data_with_zero_blocks(
    aws: Any, clients: AwsClients, tmp_path: Any
) -> None:
    base = make_disk(2)
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    parent, _ = ship(writer, base, [(0, len(base))], None, client_token(RUN, "d0", "inc-1"))

    changed = bytearray(base)
    extents = [(3 * BS + 17, 4096), (10 * BS, 2 * BS), (len(changed) - 1000, 1000)]
    changed[3 * BS + 17 : 3 * BS + 17 + 4096] = random.Random(3).randbytes(4096)
    changed[10 * BS : 12 * BS] = bytes(2 * BS)  # data in the parent, zeros now: must be written
    changed[len(changed) - 1000 :] = b"\xab" * 1000
    aws.admin.reset_stats()
    child, cp = ship(writer, changed, extents, parent.snapshot_id, client_token(RUN, "d0", "inc-2"))

    indices = extents_to_blocks(extents, len(changed))
    assert indices == [3, 10, 11, 24]
    assert cp.counters.zero_blocks_skipped == 0
    assert aws.admin.stats()["put_blocks_by_snapshot"][child.snapshot_id] == len(indices)
    assert read_snapshot(clients.ebs, child.snapshot_id, len(changed)) == bytes(changed)
    assert read_snapshot(clients.ebs, parent.snapshot_id, len(base)) == bytes(base)

    # deleting the parent keeps the child whole (what makes retention safe)
    clients.ec2.delete_snapshot(SnapshotId=parent.snapshot_id)
    out = tmp_path / "child.img"
    read_snapshot_into(clients.ebs, child.snapshot_id, len(changed), out)
    assert out.read_bytes() == bytes(changed)


def test_start_is_idempotent_by_client_token(aws: Any, clients: AwsClients) -> None:
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    token = client_token(RUN, "d0", "idem")
    a = writer.start(1, None, token, {"k": "v"})
    b = writer.start(1, None, token, {"k": "v"})
    assert a.snapshot_id == b.snapshot_id
    with pytest.raises(EbsCallError) as err:
        writer.start(2, None, token, {"k": "v"})
    assert err.value.code == "ConflictException" and not err.value.retryable


def test_resume_resends_at_most_one_window(aws: Any, clients: AwsClients) -> None:
    disk = make_disk(4, capacity=64 * BS)
    capacity = len(disk)
    indices = list(range(block_count(capacity)))
    window = 4
    heartbeats: list[Checkpoint] = []
    cancel = threading.Event()

    def heartbeat(cp: Checkpoint) -> None:
        heartbeats.append(cp)
        if cp.cursor >= 20:
            cancel.set()  # the worker "dies" right after this heartbeat

    aws.admin.set_faults(latency_ms=5)
    settings = fast(max_in_flight=window, checkpoint_every_blocks=3)
    first = EbsSnapshotWriter(clients.ebs, clients.ec2, settings, cancel, heartbeat)
    up = first.start(1, None, client_token(RUN, "d0", "resume"))
    read = lambda off, n: bytes(disk[off : off + n])  # noqa: E731
    with pytest.raises(UploadCancelled):
        first.put_blocks(up, iter_blocks(read, indices, capacity))

    last = Checkpoint.from_dict(heartbeats[-1].to_dict())  # what Temporal kept
    sent_before = aws.admin.stats()["put_blocks_by_snapshot"][up.snapshot_id]
    assert sent_before < nonzero_blocks(disk, indices)  # really interrupted

    second = EbsSnapshotWriter(clients.ebs, clients.ec2, settings)
    resumed = second.resume(last.snapshot_id, last.cursor, None, last.high_water)
    cp = second.put_blocks(resumed, iter_blocks(read, indices, capacity))
    assert second.complete(resumed) in ("pending", "completed")  # count + LINEAR verified
    second.wait_completed(up.snapshot_id, 30)

    total_puts = aws.admin.stats()["put_blocks_by_snapshot"][up.snapshot_id]
    resent = total_puts - nonzero_blocks(disk, indices)
    assert 0 <= resent <= window
    assert cp.counters.blocks_resent_after_resume <= window + 1
    assert cp.counters.blocks_below_cursor == nonzero_blocks(disk, indices[: last.cursor])
    assert read_snapshot(clients.ebs, up.snapshot_id, capacity) == bytes(disk)


def test_throttling_server_errors_and_late_visibility_are_survived(
    aws: Any, clients: AwsClients
) -> None:
    aws.admin.set_faults(
        throttle_fraction=0.25,
        server_error_fraction=0.1,
        not_found_after_start_seconds=1.0,
        operations=["PutSnapshotBlock", "CompleteSnapshot"],
        seed=7,
    )
    disk = make_disk(5)
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast(call_attempts=10))
    up, cp = ship(writer, disk, [(0, len(disk))], None, client_token(RUN, "d0", "faults"))
    stats = aws.admin.stats()
    errors = stats["errors"]
    assert any("ResourceNotFoundException" in k for k in errors)
    assert any("RequestThrottledException" in k for k in errors)
    assert cp.counters.retries > 0
    aws.admin.reset_faults()
    assert read_snapshot(clients.ebs, up.snapshot_id, len(disk)) == bytes(disk)


def test_non_retryable_error_surfaces_clearly(aws: Any, clients: AwsClients) -> None:
    aws.admin.set_faults(access_denied_operations=["PutSnapshotBlock"])
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    up = writer.start(1, None, client_token(RUN, "d0", "denied"))
    disk = make_disk(6)
    t0 = time.monotonic()
    with pytest.raises(EbsCallError) as err:
        writer.put_blocks(
            up, iter_blocks(lambda o, n: bytes(disk[o : o + n]), [0, 3, 4], len(disk))
        )
    assert time.monotonic() - t0 < 5
    assert err.value.code == "AccessDeniedException"
    assert err.value.operation == "PutSnapshotBlock"
    assert not err.value.retryable
    assert str(err.value).startswith("PutSnapshotBlock failed: AccessDeniedException")
    assert aws.admin.stats()["errors"].get("PutSnapshotBlock:AccessDeniedException", 0) <= 3


def test_reader_follows_pages_including_empty_ones(aws: Any, clients: AwsClients) -> None:
    disk = make_disk(8)
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    up, _ = ship(writer, disk, [(0, len(disk))], None, client_token(RUN, "d0", "pages"))
    aws.admin.set_faults(list_max_page=3, empty_page_fraction=0.3, seed=3)
    listed = [r.index for r in list_snapshot_blocks(clients.ebs, up.snapshot_id, page_size=100)]
    assert listed == [i for i in range(block_count(len(disk))) if i not in (1, 2, 7, 15)]
    assert aws.admin.stats()["requests"]["ListSnapshotBlocks"] > len(listed) // 3
    assert read_snapshot(clients.ebs, up.snapshot_id, len(disk)) == bytes(disk)


def test_wait_completed_times_out_while_sealing(aws: Any, clients: AwsClients) -> None:
    aws.admin.set_faults(complete_delay_seconds=30)
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    up = writer.start(1, None, client_token(RUN, "d0", "slow"))
    writer.put_blocks(up, iter([(0, b"\x01" * BS)]))
    writer.complete(up)
    from snapship.ebs.writer import SnapshotWaitTimeout

    with pytest.raises(SnapshotWaitTimeout):
        writer.wait_completed(up.snapshot_id, timeout_s=0.3)


def test_snapshot_timed_out_into_error_is_reported(aws: Any, clients: AwsClients) -> None:
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    up = writer.start(1, None, client_token(RUN, "d0", "expire"), timeout_minutes=10)
    writer.put_blocks(up, iter([(0, b"\x01" * BS)]))
    aws.admin.advance_clock(11 * 60)  # no put/complete within Timeout -> error
    with pytest.raises(EbsCallError) as err:
        writer.wait_completed(up.snapshot_id, timeout_s=10)
    assert err.value.code == "SnapshotError" and "error" in str(err.value)
    with pytest.raises(EbsCallError) as put_err:
        writer.put_blocks(up, iter([(1, b"\x01" * BS)]))
    assert put_err.value.code == "ValidationException" and not put_err.value.retryable


def test_ship_blocks_is_repeatable_across_attempts(aws: Any, clients: AwsClients) -> None:
    from snapship.ebs.writer import ship_blocks

    disk = make_disk(9, capacity=40 * BS)
    indices = list(range(block_count(len(disk))))
    read = lambda off, n: bytes(disk[off : off + n])  # noqa: E731
    token = client_token(RUN, "d0", "ship")
    beats: list[Checkpoint] = []
    cancel = threading.Event()

    def heartbeat(cp: Checkpoint) -> None:
        beats.append(cp)
        if cp.cursor >= 10:
            cancel.set()

    aws.admin.set_faults(latency_ms=5)
    settings = fast(max_in_flight=4, checkpoint_every_blocks=2)
    attempt1 = EbsSnapshotWriter(clients.ebs, clients.ec2, settings, cancel, heartbeat)
    with pytest.raises(UploadCancelled):
        ship_blocks(
            attempt1,
            iter_blocks(read, indices, len(disk)),
            volume_size_gib=1,
            parent_snapshot_id=None,
            client_token=token,
        )
    attempt2 = EbsSnapshotWriter(clients.ebs, clients.ec2, settings)
    out = ship_blocks(
        attempt2,
        iter_blocks(read, indices, len(disk)),
        volume_size_gib=1,
        parent_snapshot_id=None,
        client_token=token,
        checkpoint=beats[-1],
    )
    assert out.resumed and out.snapshot_id == beats[-1].snapshot_id
    assert out.changed_blocks_count == nonzero_blocks(disk, indices)
    assert out.counters.blocks_below_cursor > 0
    assert read_snapshot(clients.ebs, out.snapshot_id, len(disk)) == bytes(disk)

    attempt3 = EbsSnapshotWriter(clients.ebs, clients.ec2, settings)  # retry after success
    again = ship_blocks(
        attempt3,
        iter_blocks(read, indices, len(disk)),
        volume_size_gib=1,
        parent_snapshot_id=None,
        client_token=token,
    )
    assert again.already_completed and again.snapshot_id == out.snapshot_id
    assert again.counters.blocks_sent == 0


def test_reader_survives_throttling(aws: Any, clients: AwsClients) -> None:
    disk = make_disk(10, capacity=24 * BS)
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, fast())
    up, _ = ship(writer, disk, [(0, len(disk))], None, client_token(RUN, "d0", "read-throttle"))
    aws.admin.set_faults(
        throttle_fraction=0.3, operations=["GetSnapshotBlock", "ListSnapshotBlocks"], seed=11
    )
    assert read_snapshot(clients.ebs, up.snapshot_id, len(disk)) == bytes(disk)
    stats = aws.admin.stats()
    assert sum(v for k, v in stats["errors"].items() if "Throttled" in k) > 0, stats
