"""The writer's pipeline logic against an in-process fake EBS client (fast, deterministic).

The fake checks what AWS checks (checksums, data length, ascending aggregate on complete) and
records concurrency, so ordering, cursor, backpressure, resume and retry rules are observable.
Integration against the local AWS endpoint lives in test_ebs_integration.py.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snapship.blocks import EBS_BLOCK_SIZE, SourceBlock
from snapship.checksums import linear_aggregate
from snapship.ebs.client import EbsCallError
from snapship.ebs.curl_options import HttpResult, SignedPut
from snapship.ebs.writer import (
    Checkpoint,
    EbsSnapshotWriter,
    SnapshotUpload,
    UploadCancelled,
    WriterSettings,
    client_token,
)

BS = EBS_BLOCK_SIZE


def client_error(code: str, status: int = 400, reason: str = "") -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": f"fake {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    if reason:
        response["Reason"] = reason
    return ClientError(response, "Fake")  # type: ignore[arg-type]


Fault = Callable[[str, dict[str, Any]], Exception | None]


class FakeEbs:
    def __init__(self, delay: Callable[[], float] = lambda: 0.0, fault: Fault | None = None):
        self.delay = delay
        self.fault = fault
        self.lock = threading.Lock()
        self.blocks: dict[int, bytes] = {}
        self.put_calls: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed: dict[str, Any] | None = None
        self.start_kwargs: dict[str, Any] | None = None

    def _maybe_fail(self, op: str, kwargs: dict[str, Any]) -> None:
        if self.fault is not None:
            exc = self.fault(op, kwargs)
            if exc is not None:
                raise exc

    def start_snapshot(self, **kwargs: Any) -> dict[str, Any]:
        self._maybe_fail("StartSnapshot", kwargs)
        self.start_kwargs = kwargs
        return {"SnapshotId": "snap-fake", "Status": "pending"}

    def put_snapshot_block(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay())
            self._maybe_fail("PutSnapshotBlock", kwargs)
            data = kwargs["BlockData"]
            assert kwargs["DataLength"] == BS == len(data)
            assert kwargs["ChecksumAlgorithm"] == "SHA256"
            if base64.b64decode(kwargs["Checksum"]) != hashlib.sha256(data).digest():
                raise client_error("ValidationException", reason="INVALID_CHECKSUM")
            with self.lock:
                self.blocks[kwargs["BlockIndex"]] = data
                self.put_calls.append(kwargs["BlockIndex"])
            return {}
        finally:
            with self.lock:
                self.in_flight -= 1

    def complete_snapshot(self, **kwargs: Any) -> dict[str, Any]:
        self._maybe_fail("CompleteSnapshot", kwargs)
        self.completed = kwargs
        return {"Status": "pending"}


def make_blocks(n: int, zero_every: int = 3, seed: int = 1) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if (i + 1) % zero_every == 0:
            out.append((i * 2, bytes(BS)))  # gaps in the index space too
        else:
            out.append((i * 2, rng.randbytes(64) * (BS // 64)))
    return out


def expected_aggregate(blocks: list[tuple[int, bytes]], skip_zero: bool) -> tuple[int, str]:
    digests = {
        i: hashlib.sha256(d).digest() for i, d in blocks if not (skip_zero and d == bytes(BS))
    }
    return len(digests), linear_aggregate(digests)


def fast_settings(**overrides: Any) -> WriterSettings:
    base: dict[str, Any] = {"max_in_flight": 8, "backoff_initial_s": 0.001, "backoff_max_s": 0.01}
    base.update(overrides)
    return WriterSettings(**base)


def test_client_token_is_deterministic_and_bounded() -> None:
    a = client_token("vm-1", "disk-uuid", 2000, "run-7")
    assert a == client_token("vm-1", "disk-uuid", 2000, "run-7")
    assert a != client_token("vm-1", "disk-uuid", 2000, "run-8")
    assert len(a) <= 64 and a.isascii()


def test_first_sync_skips_zero_blocks_and_completes_with_linear_checksum() -> None:
    ebs = FakeEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.start(1, None, client_token("t"), {"k": "v"}, "d" * 300, 5)
    assert ebs.start_kwargs is not None
    assert "ParentSnapshotId" not in ebs.start_kwargs
    assert len(ebs.start_kwargs["Description"]) == 255 and ebs.start_kwargs["Timeout"] == 10
    blocks = make_blocks(30)
    cp = writer.put_blocks(up, iter(blocks))
    writer.complete(up)
    count, agg = expected_aggregate(blocks, skip_zero=True)
    assert ebs.completed == {
        "SnapshotId": "snap-fake",
        "ChangedBlocksCount": count,
        "Checksum": agg,
        "ChecksumAlgorithm": "SHA256",
        "ChecksumAggregationMethod": "LINEAR",
    }
    assert set(ebs.blocks) == {i for i, d in blocks if d != bytes(BS)}
    assert cp.counters.zero_blocks_skipped == 10
    assert cp.counters.blocks_sent == 20 == len(ebs.put_calls)
    assert cp.counters.bytes_read == 30 * BS and cp.counters.bytes_sent == 20 * BS
    assert cp.cursor == blocks[-1][0] + 1


def test_incremental_writes_zero_blocks() -> None:
    ebs = FakeEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.start(1, "snap-parent", client_token("t"))
    assert ebs.start_kwargs is not None and ebs.start_kwargs["ParentSnapshotId"] == "snap-parent"
    blocks = make_blocks(12)
    cp = writer.put_blocks(up, iter(blocks))
    writer.complete(up)
    assert set(ebs.blocks) == {i for i, _ in blocks}
    assert ebs.blocks[4] == bytes(BS)  # block 2 of make_blocks is a zero block (index 4)
    assert cp.counters.zero_blocks_skipped == 0
    assert ebs.completed is not None
    assert (ebs.completed["ChangedBlocksCount"], ebs.completed["Checksum"]) == expected_aggregate(
        blocks, skip_zero=False
    )


def test_short_tail_block_is_zero_padded() -> None:
    ebs = FakeEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.start(1, None, "tok")
    writer.put_blocks(up, iter([(0, b"\x01" * 1024)]))
    assert ebs.blocks[0] == b"\x01" * 1024 + bytes(BS - 1024)


def test_backpressure_bounds_in_flight_calls_and_buffered_blocks() -> None:
    ebs = FakeEbs(delay=lambda: 0.002)
    writer = EbsSnapshotWriter(ebs, settings=fast_settings(max_in_flight=6))
    up = writer.start(1, None, "tok")
    ahead: list[int] = []

    def produce() -> Iterator[tuple[int, bytes]]:
        for i in range(80):
            with ebs.lock:
                ahead.append(i - len(ebs.put_calls))
            yield i, b"\x07" * BS

    writer.put_blocks(up, produce())
    assert ebs.max_in_flight <= 6
    assert ebs.max_in_flight >= 3  # really concurrent
    # produced-but-not-stored blocks never exceed the in-flight bound (+ the one being handed over)
    assert max(ahead) <= 6 + 1


def test_cursor_only_covers_durably_written_blocks() -> None:
    rng = random.Random(5)
    ebs = FakeEbs(delay=lambda: rng.random() * 0.004)
    seen: list[Checkpoint] = []
    violations: list[int] = []
    blocks = make_blocks(120, zero_every=5)
    wanted = {i for i, d in blocks if d != bytes(BS)}

    def on_checkpoint(cp: Checkpoint) -> None:
        with ebs.lock:
            stored = set(ebs.blocks)
        missing = {i for i in wanted if i < cp.cursor} - stored
        violations.extend(missing)
        seen.append(cp)

    writer = EbsSnapshotWriter(
        ebs, settings=fast_settings(checkpoint_every_blocks=7), on_checkpoint=on_checkpoint
    )
    up = writer.start(1, None, "tok")
    writer.put_blocks(up, iter(blocks))
    assert violations == []
    sent = len(wanted)
    # at most one per 7 retired blocks (+ the final one), and regular: at least one per 7 + window
    assert sent // (7 + 8) <= len(seen) <= sent // 7 + 1
    cursors = [cp.cursor for cp in seen]
    assert cursors == sorted(cursors)
    assert seen[-1].cursor == blocks[-1][0] + 1


def test_resume_hashes_but_does_not_resend_blocks_below_cursor() -> None:
    blocks = make_blocks(40)
    ebs = FakeEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.resume("snap-fake", cursor=41, parent_snapshot_id=None, high_water=50)
    cp = writer.put_blocks(up, iter(blocks))
    writer.complete(up)
    assert all(i >= 41 for i in ebs.put_calls)
    nonzero_below = sum(1 for i, d in blocks if i < 41 and d != bytes(BS))
    assert cp.counters.blocks_below_cursor == nonzero_below
    assert cp.counters.blocks_resent_after_resume == sum(
        1 for i, d in blocks if 41 <= i <= 50 and d != bytes(BS)
    )
    assert ebs.completed is not None
    assert (ebs.completed["ChangedBlocksCount"], ebs.completed["Checksum"]) == expected_aggregate(
        blocks, skip_zero=True
    )


def test_throttling_and_server_errors_are_retried() -> None:
    failures = {"n": 0}

    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        if op == "PutSnapshotBlock" and kwargs["BlockIndex"] in (2, 4) and failures["n"] < 6:
            failures["n"] += 1
            return (
                client_error("RequestThrottledException", 400, "ACCOUNT_THROTTLED")
                if failures["n"] % 2
                else client_error("InternalServerException", 500)
            )
        return None

    ebs = FakeEbs(fault=fault)
    writer = EbsSnapshotWriter(ebs, settings=fast_settings(call_attempts=8))
    up = writer.start(1, None, "tok")
    cp = writer.put_blocks(up, iter(make_blocks(6, zero_every=100)))
    assert failures["n"] == 6
    assert cp.counters.retries == 6
    assert set(ebs.blocks) == {0, 2, 4, 6, 8, 10}


def test_not_found_right_after_start_is_retried_within_the_window() -> None:
    started = time.monotonic()

    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        if op == "PutSnapshotBlock" and time.monotonic() - started < 0.15:
            return client_error("ResourceNotFoundException", 404, "SNAPSHOT_NOT_FOUND")
        return None

    ebs = FakeEbs(fault=fault)
    writer = EbsSnapshotWriter(ebs, settings=fast_settings(not_found_window_s=5))
    up = writer.start(1, None, "tok")
    writer.put_blocks(up, iter(make_blocks(5, zero_every=100)))
    assert len(ebs.blocks) == 5


def test_not_found_retries_do_not_use_up_the_throttling_attempts() -> None:
    """Block 0 meets "does not exist" five times (within the window), then two throttles: with
    three attempts for transient faults, it still lands (the not-founds are the window's)."""
    seen = {"n": 0}

    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        if op != "PutSnapshotBlock" or kwargs["BlockIndex"] != 0:
            return None
        seen["n"] += 1
        if seen["n"] <= 5:
            return client_error("ResourceNotFoundException", 404, "SNAPSHOT_NOT_FOUND")
        if seen["n"] <= 7:
            return client_error("RequestThrottledException", 400, "ACCOUNT_THROTTLED")
        return None

    ebs = FakeEbs(fault=fault)
    writer = EbsSnapshotWriter(
        ebs, settings=fast_settings(call_attempts=3, not_found_window_s=5)
    )
    up = writer.start(1, None, "tok")
    writer.put_blocks(up, iter(make_blocks(2, zero_every=100)))
    assert seen["n"] == 8
    assert 0 in ebs.blocks


def test_not_found_beyond_the_window_fails_clearly() -> None:
    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        if op == "PutSnapshotBlock":
            return client_error("ResourceNotFoundException", 404, "SNAPSHOT_NOT_FOUND")
        return None

    writer = EbsSnapshotWriter(FakeEbs(fault=fault), settings=fast_settings(not_found_window_s=0.1))
    up = writer.start(1, None, "tok")
    t0 = time.monotonic()
    with pytest.raises(EbsCallError) as err:
        writer.put_blocks(up, iter(make_blocks(5, zero_every=100)))
    assert time.monotonic() - t0 < 3
    assert err.value.code == "ResourceNotFoundException"
    assert err.value.reason == "SNAPSHOT_NOT_FOUND"
    assert not err.value.retryable


def test_non_retryable_error_surfaces_at_once_with_checkpoint() -> None:
    calls = {"n": 0}

    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        if op == "PutSnapshotBlock" and kwargs["BlockIndex"] == 20:
            calls["n"] += 1
            return client_error("ValidationException", 400, "INVALID_BLOCK")
        return None

    writer = EbsSnapshotWriter(FakeEbs(fault=fault), settings=fast_settings())
    up = writer.start(1, None, "tok")
    with pytest.raises(EbsCallError) as err:
        writer.put_blocks(up, iter(make_blocks(40, zero_every=100)))
    assert calls["n"] == 1  # not retried
    assert "PutSnapshotBlock failed: ValidationException (INVALID_BLOCK)" in str(err.value)
    assert not err.value.retryable
    cp = err.value.checkpoint
    assert isinstance(cp, Checkpoint) and cp.cursor <= 20
    assert cp.high_water >= 20


def test_exhausted_throttling_is_reported_retryable() -> None:
    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        return client_error("RequestThrottledException", 400) if op == "PutSnapshotBlock" else None

    writer = EbsSnapshotWriter(FakeEbs(fault=fault), settings=fast_settings(call_attempts=3))
    up = writer.start(1, None, "tok")
    with pytest.raises(EbsCallError) as err:
        writer.put_blocks(up, iter(make_blocks(3, zero_every=100)))
    assert err.value.retryable and err.value.code == "RequestThrottledException"


def test_cancel_stops_promptly_with_a_checkpoint() -> None:
    cancel = threading.Event()
    ebs = FakeEbs(delay=lambda: 0.01)
    writer = EbsSnapshotWriter(ebs, settings=fast_settings(), cancel=cancel)
    up = writer.start(1, None, "tok")

    def produce() -> Iterator[tuple[int, bytes]]:
        for i in range(100_000):
            if i == 50:
                threading.Timer(0.01, cancel.set).start()
            yield i, b"\x01" * BS

    t0 = time.monotonic()
    with pytest.raises(UploadCancelled) as err:
        writer.put_blocks(up, produce())
    assert time.monotonic() - t0 < 5
    cp = err.value.checkpoint
    assert cp is not None and 0 < cp.cursor < 2000
    assert all(i in ebs.blocks for i in range(cp.cursor))


def test_blocks_must_ascend() -> None:
    writer = EbsSnapshotWriter(FakeEbs(), settings=fast_settings())
    up = writer.start(1, None, "tok")
    with pytest.raises(ValueError):
        writer.put_blocks(up, iter([(3, b"\x01" * BS), (3, b"\x01" * BS)]))


def test_complete_requires_finished_blocks_and_checkpoint_round_trips() -> None:
    writer = EbsSnapshotWriter(FakeEbs(), settings=fast_settings())
    up = writer.start(1, None, "tok")
    with pytest.raises(RuntimeError):
        writer.complete(up)
    cp = writer.put_blocks(up, iter(make_blocks(4)))
    assert Checkpoint.from_dict(cp.to_dict()) == cp


def test_bad_client_token_is_rejected() -> None:
    writer = EbsSnapshotWriter(FakeEbs())
    with pytest.raises(ValueError):
        writer.start(1, None, "x" * 65)


def test_a_later_blocks_failure_does_not_wait_for_earlier_retries() -> None:
    def fault(op: str, kwargs: dict[str, Any]) -> Exception | None:
        if op != "PutSnapshotBlock":
            return None
        if kwargs["BlockIndex"] == 2:
            return client_error("RequestThrottledException", 400)  # would retry for ~10 s
        if kwargs["BlockIndex"] == 6:
            return client_error("ValidationException", 400, "INVALID_BLOCK")
        return None

    settings = fast_settings(call_attempts=100, backoff_initial_s=0.1, backoff_max_s=0.1)
    writer = EbsSnapshotWriter(FakeEbs(fault=fault), settings=settings)
    up = writer.start(1, None, "tok")
    t0 = time.monotonic()
    with pytest.raises(EbsCallError) as err:
        writer.put_blocks(up, iter(make_blocks(20, zero_every=100)))
    assert time.monotonic() - t0 < 2
    assert err.value.code == "ValidationException"
    assert err.value.checkpoint.cursor <= 2


class _RecordingEvent(threading.Event):
    """A cancel event whose waits return at once and are recorded (no real sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(float(timeout or 0.0))
        return False


class _PendingEc2:
    def __init__(self, pending_polls: int) -> None:
        self.calls = 0
        self.pending_polls = pending_polls

    def describe_snapshots(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        state = "pending" if self.calls <= self.pending_polls else "completed"
        return {"Snapshots": [{"SnapshotId": kwargs["SnapshotIds"][0], "State": state}]}


def test_waiting_for_completed_polls_soon_then_backs_off() -> None:
    """A quickly sealed snapshot is seen within a fraction of a second (the old fixed 2 s pause
    made every run with little changed wait seconds), and a long wait backs off to the cap."""
    cancel = _RecordingEvent()
    ec2 = _PendingEc2(pending_polls=7)
    writer = EbsSnapshotWriter(
        FakeEbs(), ec2, WriterSettings(wait_poll_first_s=0.1, wait_poll_s=2.0), cancel=cancel
    )
    assert writer.wait_completed("snap-x", timeout_s=3600) == "completed"
    assert ec2.calls == 8
    assert cancel.pauses == pytest.approx([0.1, 0.15, 0.225, 0.3375, 0.50625, 0.759375, 1.1390625])
    ec2, cancel = _PendingEc2(pending_polls=30), _RecordingEvent()
    writer = EbsSnapshotWriter(
        FakeEbs(), ec2, WriterSettings(wait_poll_first_s=0.1, wait_poll_s=2.0), cancel=cancel
    )
    writer.wait_completed("snap-x", timeout_s=3600)
    assert max(cancel.pauses) == cancel.pauses[-1] == 2.0


class _GoneEc2:
    """EC2 that does not know the snapshot (it was deleted), or knows it only after `late`."""

    def __init__(self, late: int | None = None) -> None:
        self.calls = 0
        self.late = late

    def describe_snapshots(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.late is not None and self.calls > self.late:
            return {"Snapshots": [{"SnapshotId": kwargs["SnapshotIds"][0], "State": "completed"}]}
        raise client_error("InvalidSnapshot.NotFound", 400)


def test_a_snapshot_missing_past_the_not_found_window_fails_clearly() -> None:
    """Not an hour's wait: a 50-VM run sat in complete_group for a snapshot deleted under it."""
    settings = WriterSettings(wait_poll_first_s=0.01, wait_poll_s=0.02, not_found_window_s=0.2)
    writer = EbsSnapshotWriter(FakeEbs(), _GoneEc2(), settings)
    started = time.monotonic()
    with pytest.raises(EbsCallError) as err:
        writer.wait_completed("snap-gone", timeout_s=3600)
    assert time.monotonic() - started < 2
    assert err.value.code == "InvalidSnapshot.NotFound" and not err.value.retryable
    assert "snap-gone no longer exists" in str(err.value)
    # One that EC2 shows late (eventual consistency) is still waited for.
    late = _GoneEc2(late=3)
    assert EbsSnapshotWriter(FakeEbs(), late, settings).wait_completed("snap-late") == "completed"


# ----- blocks a VDDK reader process sent itself (DiskReader.send_blocks) ---------------------


class RemoteEbs(FakeEbs):
    """FakeEbs that also signs PUTs for a reader process and settles their outcomes: a 2xx
    stored the block (recorded as sent elsewhere), 503 a server error, 403 access denied."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.signed: list[int] = []
        self.sent_elsewhere: list[int] = []

    def sign_put(self, snapshot_id: str, index: int, digest: bytes) -> SignedPut:
        self.signed.append(index)
        return SignedPut(f"http://ebs/snapshots/{snapshot_id}/blocks/{index}", ["X-Signed: 1"])

    def settle_put(self, snapshot_id: str, index: int, result: HttpResult) -> Exception | None:
        if result.stored:
            self.sent_elsewhere.append(index)
            return None
        if result.status == 403:
            return client_error("AccessDeniedException", 403)
        return client_error("InternalServerException", 503)


def remote_blocks(
    writer: EbsSnapshotWriter, up: SnapshotUpload, blocks: list[tuple[int, bytes]],
    answers: dict[int, int],
) -> list[SourceBlock]:
    """What send_blocks yields: the plan asked for each block, the reader's outcome attached,
    and the bytes only of a block whose PUT failed."""
    plan = writer.send_plan(up)
    out = []
    for index, data in blocks:
        digest = hashlib.sha256(data).digest()
        block = SourceBlock.of(index, data, digest)
        put = None
        if plan(index, digest, block.is_zero) is not None:
            put = HttpResult(answers.get(index, 201))
        keep = data if put is not None and not put.stored else b""
        out.append(block._replace(data=keep, planned=True, put=put))
    return out


def test_blocks_the_reader_sent_are_settled_in_order_and_failed_ones_retried_here() -> None:
    blocks = make_blocks(12, zero_every=4)
    ebs = RemoteEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.start(1, None, "tok")
    cp = writer.put_blocks(up, iter(remote_blocks(writer, up, blocks, {4: 503, 10: 503})))
    writer.complete(up)

    nonzero = [i for i, d in blocks if d != bytes(BS)]
    assert sorted(ebs.signed) == nonzero  # zero blocks of a first sync are not even signed
    assert set(ebs.sent_elsewhere) == set(nonzero) - {4, 10}
    assert sorted(ebs.put_calls) == [4, 10]  # the retries, sent from here
    assert ebs.blocks[4] == dict(blocks)[4] and ebs.blocks[10] == dict(blocks)[10]
    assert cp.counters.blocks_sent == len(nonzero)
    assert cp.counters.bytes_read == len(blocks) * BS
    assert cp.counters.zero_blocks_skipped == len(blocks) - len(nonzero)
    assert cp.cursor == blocks[-1][0] + 1
    assert ebs.completed is not None
    assert (ebs.completed["ChangedBlocksCount"], ebs.completed["Checksum"]) == expected_aggregate(
        blocks, skip_zero=True
    )


def test_a_resumed_upload_has_the_reader_send_only_what_lies_past_the_cursor() -> None:
    blocks = make_blocks(10, zero_every=3)
    ebs = RemoteEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.resume("snap-fake", cursor=8, parent_snapshot_id="snap-parent")
    cp = writer.put_blocks(up, iter(remote_blocks(writer, up, blocks, {})))
    # With a parent every changed block is written, zeros included; below the cursor none.
    assert ebs.signed == [i for i, _ in blocks if i >= 8]
    assert cp.counters.blocks_below_cursor == 4
    assert cp.counters.blocks_sent == len(blocks) - 4


def test_a_permanent_answer_to_a_reader_sent_put_fails_at_once_with_a_checkpoint() -> None:
    blocks = make_blocks(6, zero_every=100)
    ebs = RemoteEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.start(1, None, "tok")
    with pytest.raises(EbsCallError) as caught:
        writer.put_blocks(up, iter(remote_blocks(writer, up, blocks, {4: 403})))
    assert caught.value.code == "AccessDeniedException" and not caught.value.retryable
    assert caught.value.checkpoint is not None and caught.value.checkpoint.cursor <= 4
    assert ebs.put_calls == []  # a permanent fault is not sent again


def test_a_planned_block_that_came_back_unsent_is_never_sent_empty() -> None:
    blocks = make_blocks(3, zero_every=100)
    ebs = RemoteEbs()
    writer = EbsSnapshotWriter(ebs, settings=fast_settings())
    up = writer.start(1, None, "tok")
    lost = [
        SourceBlock.of(i, b"", hashlib.sha256(d).digest())._replace(planned=True)
        for i, d in blocks
    ]
    with pytest.raises(RuntimeError, match="neither sent nor skipped"):
        writer.put_blocks(up, iter(lost))
    assert ebs.put_calls == []
