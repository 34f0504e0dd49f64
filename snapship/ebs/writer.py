"""Write one disk's blocks into an EBS snapshot with the EBS direct APIs.

Shaped like s3transfer: a ThreadPoolExecutor runs the calls, a semaphore bounds the futures in
flight, and the producer (the VDDK reader, running in the caller's thread) blocks when every slot
is taken. So memory holds at most `max_in_flight` blocks no matter how fast the disk reads — there
is no unbounded queue of 512 KiB buffers.

Ordering and checkpoints: blocks must arrive in strictly ascending index order. A block's future
hashes it (SHA-256, in the worker: hashlib releases the GIL) and, unless it lies below a resume
cursor, puts it. Futures are retired in submission order, which is ascending, so the LINEAR
aggregate streams in constant memory and the *cursor* — the lowest index below which every block
is durably stored — is simply the oldest unfinished future's index. The caller heartbeats the
cursor; a retried attempt passes it back to `resume`, re-supplies the same blocks, and blocks
below the cursor are only hashed (they still count in ChangedBlocksCount and the aggregate).

Zero blocks are skipped only without a parent (first full sync: a missing block reads as zeros).
With a parent every changed block is written, zeros included: EBS has no trim, and skipping would
leave the parent's stale data visible.

Retries here are short and call-level (throttling, 5xx, connection errors, and "snapshot does not
exist" for a window right after StartSnapshot); anything else raises `EbsCallError` at once, and
the long retry budget belongs to Temporal.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from snapship.blocks import EBS_BLOCK_SIZE, SourceBlock, pad_block
from snapship.checksums import LinearAggregate, b64_digest, is_zero_block
from snapship.ebs.client import EbsCallError, error_code, is_not_found, is_transient
from snapship.ebs.completion import CompletionMark
from snapship.telemetry.tracing import span

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CLIENT_TOKEN = 64
MAX_DESCRIPTION = 255
MAX_TAGS = 50


def client_token(*parts: str | int) -> str:
    """Deterministic StartSnapshot ClientToken (64 hex chars) from e.g. VM, disk and run ids.

    The same run of the same disk always gets the same token, so a retried StartSnapshot returns
    the snapshot the earlier attempt created instead of a second one.
    """
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:MAX_CLIENT_TOKEN]


@dataclass
class WriterSettings:
    max_in_flight: int = 48
    """Blocks in flight at once (threads and buffered blocks); 32-64 suits one snapshot."""
    checkpoint_every_blocks: int = 256
    checkpoint_every_seconds: float = 10.0
    call_attempts: int = 6
    """Attempts per call for throttling/5xx/connection faults (botocore retries inside each)."""
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    not_found_window_s: float = 120.0
    """How long "snapshot does not exist" is retried after StartSnapshot (or resume)."""
    wait_poll_first_s: float = 0.1
    """First pause while waiting for `completed`; it grows by half up to `wait_poll_s`. A
    snapshot with few changed blocks seals in well under a second, and a fixed 2 s pause made a
    run with nothing changed cost seconds of waiting; the growth keeps a long wait to a call
    every `wait_poll_s`."""
    wait_poll_s: float = 2.0
    cancel_grace_s: float = 10.0
    """On cancel/failure, how long to let already-running calls finish (for an exact cursor)."""


@dataclass
class WriterCounters:
    blocks_seen: int = 0
    bytes_read: int = 0
    blocks_sent: int = 0
    bytes_sent: int = 0
    zero_blocks_skipped: int = 0
    blocks_below_cursor: int = 0
    """Blocks a resumed upload hashed but did not send again."""
    blocks_resent_after_resume: int = 0
    """Blocks sent again because they lay between the resume cursor and the old high-water mark."""
    retries: int = 0


@dataclass
class Checkpoint:
    """What a caller heartbeats so a retried attempt can resume (JSON-friendly)."""

    snapshot_id: str
    cursor: int
    high_water: int
    """Highest block index submitted so far (-1: none). Blocks in [cursor, high_water] may have
    been sent already; a resume re-sends those."""
    counters: WriterCounters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Checkpoint:
        return cls(
            snapshot_id=str(raw["snapshot_id"]),
            cursor=int(raw["cursor"]),
            high_water=int(raw.get("high_water", -1)),
            counters=WriterCounters(**raw.get("counters", {})),
        )


@dataclass
class SnapshotUpload:
    """One EBS snapshot being written: identity, resume point and running totals."""

    snapshot_id: str
    parent_snapshot_id: str | None
    start_status: str = "pending"
    """Status StartSnapshot returned: "completed" means an earlier attempt already finished it."""
    resume_cursor: int = 0
    resume_high_water: int = -1
    not_found_until: float | None = None
    counters: WriterCounters = field(default_factory=WriterCounters)
    aggregate: LinearAggregate = field(default_factory=LinearAggregate, repr=False)
    cursor: int = 0
    high_water: int = -1
    blocks_done: bool = False

    @property
    def changed_blocks_count(self) -> int:
        return self.aggregate.count

    def checkpoint(self) -> Checkpoint:
        counters = WriterCounters(**asdict(self.counters))
        return Checkpoint(self.snapshot_id, self.cursor, self.high_water, counters)


class UploadCancelled(Exception):
    """The cancel event was set; `checkpoint` says where to resume."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        super().__init__("EBS snapshot upload cancelled")
        self.checkpoint = checkpoint


class SnapshotWaitTimeout(Exception):
    def __init__(self, snapshot_id: str, state: str, timeout_s: float) -> None:
        state_text = state or "unknown"
        super().__init__(f"snapshot {snapshot_id} still {state_text} after {timeout_s:.0f}s")
        self.snapshot_id = snapshot_id
        self.state = state


CheckpointCallback = Callable[[Checkpoint], None]


def _skips_zero(has_parent: bool, zero_or_data: bool | bytes) -> bool:
    """A zero block is left out only without a parent (a missing block reads as zeros); with a
    parent every changed block is written, zeros included (EBS has no trim)."""
    if has_parent:
        return False
    return zero_or_data if isinstance(zero_or_data, bool) else is_zero_block(zero_or_data)


def _retryable(exc: BaseException) -> bool:
    return is_transient(exc) or is_not_found(exc)


class EbsSnapshotWriter:
    """Writes EBS snapshots through the EBS direct APIs.

    One upload at a time per instance (uploads may follow each other); ship several disks in
    parallel with one writer each, sharing the thread-safe boto3 clients.
    """

    def __init__(
        self,
        ebs: Any,
        ec2: Any = None,
        settings: WriterSettings | None = None,
        cancel: threading.Event | None = None,
        on_checkpoint: CheckpointCallback | None = None,
    ) -> None:
        self.ebs = ebs
        self.ec2 = ec2
        self.settings = settings or WriterSettings()
        self.cancel = cancel or threading.Event()
        self.on_checkpoint = on_checkpoint
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._retries = 0

    # ------------------------------------------------------------ calls with short retries

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds) or self.cancel.is_set():
            raise UploadCancelled()

    def _call(self, operation: str, fn: Callable[[], T], not_found_until: float | None = None) -> T:
        # Most calls succeed at once: the retry machinery (tens of µs per call, 2,048 block
        # puts per GiB) is set up only once a first attempt has failed.
        try:
            return fn()
        except UploadCancelled:
            raise
        except Exception as exc:
            if not _retryable(exc):
                raise EbsCallError.from_exception(operation, exc) from exc
            first = exc
        return self._retry(operation, fn, first, not_found_until)

    def _retry(
        self,
        operation: str,
        fn: Callable[[], T],
        first: Exception,
        not_found_until: float | None,
    ) -> T:
        """`fn` after its first attempt failed with `first`: tenacity sees that failure as its
        attempt 1, so the budgets, backoff and counting are those of a call retried from the
        start."""
        attempts = self.settings.call_attempts
        failed_first: list[Exception] = [first]

        def attempt() -> T:
            if failed_first:
                raise failed_first.pop()
            return fn()

        transient_failures = 0

        def stop(state: RetryCallState) -> bool:
            # The two budgets are apart: "does not exist" right after StartSnapshot is retried
            # for a time, and those attempts must not use up the attempts a throttle or a 5xx
            # gets afterwards (a CI run lost a block so: ten not-founds, then one throttle).
            nonlocal transient_failures
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None and is_not_found(exc):
                return not_found_until is None or time.monotonic() >= not_found_until
            transient_failures += 1
            return transient_failures >= attempts

        def count_retry(state: RetryCallState) -> None:
            with self._lock:
                self._retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.debug(
                "%s retry %d after %s",
                operation,
                state.attempt_number,
                error_code(exc) if exc else "",
            )

        retrying = Retrying(
            sleep=self._sleep,
            stop=stop,
            wait=wait_random_exponential(
                multiplier=self.settings.backoff_initial_s, max=self.settings.backoff_max_s
            ),
            retry=retry_if_exception(_retryable),
            before_sleep=count_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except UploadCancelled:
            raise
        except Exception as exc:
            raise EbsCallError.from_exception(operation, exc) from exc

    # ------------------------------------------------------------ start / resume

    def start(
        self,
        volume_size_gib: int,
        parent_snapshot_id: str | None,
        client_token: str,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        timeout_minutes: int = 60,
    ) -> SnapshotUpload:
        """StartSnapshot, idempotent by `client_token` (same token -> same snapshot)."""
        if not client_token or len(client_token) > MAX_CLIENT_TOKEN or not client_token.isascii():
            raise ValueError("client_token must be 1..64 ASCII characters")
        if tags and len(tags) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags")
        kwargs: dict[str, Any] = {
            "VolumeSize": volume_size_gib,
            "ClientToken": client_token,
            "Timeout": max(10, min(4320, timeout_minutes)),
        }
        if parent_snapshot_id:
            kwargs["ParentSnapshotId"] = parent_snapshot_id
        if tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        if description:
            kwargs["Description"] = description[:MAX_DESCRIPTION]
        self._stop.clear()
        resp = self._call("StartSnapshot", lambda: self.ebs.start_snapshot(**kwargs))
        status = str(resp.get("Status", "pending"))
        snapshot_id = str(resp["SnapshotId"])
        if status == "error":
            raise EbsCallError(
                "StartSnapshot", "SnapshotError", f"snapshot {snapshot_id} is in error state"
            )
        log.info(
            "started EBS snapshot %s (parent %s, status %s)",
            snapshot_id,
            parent_snapshot_id or "none",
            status,
        )
        return SnapshotUpload(
            snapshot_id=snapshot_id,
            parent_snapshot_id=parent_snapshot_id,
            start_status=status,
            not_found_until=time.monotonic() + self.settings.not_found_window_s,
        )

    def resume(
        self,
        snapshot_id: str,
        cursor: int,
        parent_snapshot_id: str | None,
        high_water: int = -1,
    ) -> SnapshotUpload:
        """Continue a pending snapshot from a heartbeated checkpoint (no call is made)."""
        return SnapshotUpload(
            snapshot_id=snapshot_id,
            parent_snapshot_id=parent_snapshot_id,
            resume_cursor=max(0, cursor),
            resume_high_water=high_water,
            not_found_until=time.monotonic() + self.settings.not_found_window_s,
            cursor=max(0, cursor),
        )

    # ------------------------------------------------------------ blocks

    def _put_call(
        self, upload: SnapshotUpload, index: int, data: bytes, digest: bytes
    ) -> Callable[[], Any]:
        checksum = b64_digest(digest)
        return lambda: self.ebs.put_snapshot_block(
            SnapshotId=upload.snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=EBS_BLOCK_SIZE,
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )

    def _hash_and_put(
        self, upload: SnapshotUpload, index: int, data: bytes, send: bool,
        digest: bytes | None = None,
    ) -> bytes:
        if digest is None:
            digest = hashlib.sha256(data).digest()
        if not send:
            return digest
        self._call(
            "PutSnapshotBlock", self._put_call(upload, index, data, digest), upload.not_found_until
        )
        return digest

    def _put_again(
        self, upload: SnapshotUpload, block: SourceBlock, failed: Exception
    ) -> bytes:
        """A block whose first PUT (sent by the reader process) failed with `failed`: retried
        from here with the same budgets as a first attempt made here."""
        if not _retryable(failed):
            raise EbsCallError.from_exception("PutSnapshotBlock", failed) from failed
        call = self._put_call(upload, block.block_index, block.data, block.digest)
        self._retry("PutSnapshotBlock", call, failed, upload.not_found_until)
        return block.digest

    def send_plan(self, upload: SnapshotUpload) -> Callable[[int, bytes, bool], Any]:
        """For a reader process that sends blocks itself (`DiskReader.send_blocks`): each block
        this upload PUTs, signed by the EBS client; None for the others. `put_blocks` then
        takes the reader's blocks and settles each PUT's outcome in order."""
        sign = self.ebs.sign_put

        has_parent = bool(upload.parent_snapshot_id)

        def plan(index: int, digest: bytes, is_zero: bool) -> Any:
            if _skips_zero(has_parent, is_zero) or index < upload.resume_cursor:
                return None  # as put_blocks decides: skipped, or stored before the resume
            return sign(upload.snapshot_id, index, digest)

        return plan

    def put_blocks(
        self, upload: SnapshotUpload, blocks: Iterable[tuple[int, bytes] | SourceBlock]
    ) -> Checkpoint:
        """Put every (index, data) from `blocks` (ascending) with many requests in flight.

        A SourceBlock (from the VDDK reader) carries its SHA-256 and zero test: neither is
        computed again here.

        Returns the final checkpoint; raises `EbsCallError` (with `.checkpoint`) on a call that
        failed for good and `UploadCancelled` when the cancel event is set.
        """
        # One span for the disk's whole upload, with its totals: the calls have none of their own.
        with span("ebs.PutSnapshotBlocks", snapshot_id=upload.snapshot_id) as current:
            try:
                return self._put_blocks(upload, blocks)
            finally:
                c = upload.counters
                current.set_attributes({
                    "snapship.blocks_sent": c.blocks_sent,
                    "snapship.bytes_sent": c.bytes_sent,
                    "snapship.zero_blocks_skipped": c.zero_blocks_skipped,
                    "snapship.retries": c.retries,
                })

    def _put_blocks(
        self, upload: SnapshotUpload, blocks: Iterable[tuple[int, bytes] | SourceBlock]
    ) -> Checkpoint:
        s = self.settings
        has_parent = bool(upload.parent_snapshot_id)
        self._stop.clear()
        self._retries = 0
        slots = threading.Semaphore(s.max_in_flight)
        inflight: OrderedDict[int, tuple[Future[bytes], bool]] = OrderedDict()
        counters = upload.counters
        last_index = upload.high_water
        last_seen = -1
        next_unseen = upload.cursor
        completed_since = 0
        last_checkpoint_at = time.monotonic()

        def update_cursor() -> None:
            front = next(iter(inflight)) if inflight else next_unseen
            upload.cursor = max(upload.resume_cursor, min(front, next_unseen))

        def retire() -> int:
            """Pop finished futures from the front (ascending order); raise the first failure."""
            retired = 0
            while inflight:
                index, (fut, sent) = next(iter(inflight.items()))
                if not fut.done():
                    break
                digest = fut.result()  # raises EbsCallError / UploadCancelled
                inflight.popitem(last=False)
                upload.aggregate.add(index, digest)
                if sent:
                    counters.blocks_sent += 1
                    counters.bytes_sent += EBS_BLOCK_SIZE
                retired += 1
            update_cursor()
            return retired

        def maybe_checkpoint(force: bool = False) -> None:
            nonlocal completed_since, last_checkpoint_at
            now = time.monotonic()
            due = completed_since >= s.checkpoint_every_blocks or (
                now - last_checkpoint_at >= s.checkpoint_every_seconds
            )
            if self.on_checkpoint is not None and (force or due):
                counters.retries = self._retries
                self.on_checkpoint(upload.checkpoint())
                completed_since = 0
                last_checkpoint_at = now

        failures: list[BaseException] = []

        def check_cancel() -> None:
            """Stop on cancel, and on any block's final failure without waiting for the
            blocks before it to finish (their retries are cut short by the stop event)."""
            if failures:
                raise failures[0]
            if self.cancel.is_set():
                raise UploadCancelled()

        def release(fut: Future[bytes]) -> None:
            if not fut.cancelled():
                exc = fut.exception()
                if exc is not None and not isinstance(exc, UploadCancelled):
                    failures.append(exc)
            slots.release()

        executor = ThreadPoolExecutor(max_workers=s.max_in_flight, thread_name_prefix="ebs-put")

        def submit(fn: Callable[..., bytes], *args: Any) -> Future[bytes]:
            """Run a call once the window has room; meanwhile retire and checkpoint."""
            nonlocal completed_since
            while not slots.acquire(timeout=0.2):
                check_cancel()
                completed_since += retire()
                maybe_checkpoint()
            # Each call runs in the caller's context, so its span nests under the run's.
            fut = executor.submit(contextvars.copy_context().run, fn, *args)
            fut.add_done_callback(release)
            return fut

        try:
            for item in blocks:
                index, raw = item[0], item[1]
                known = item if isinstance(item, SourceBlock) else None
                check_cancel()
                if index <= last_seen:
                    raise ValueError(f"blocks must ascend strictly ({last_seen} then {index})")
                last_seen = index
                counters.blocks_seen += 1
                sent_elsewhere = known is not None and known.planned
                counters.bytes_read += EBS_BLOCK_SIZE if sent_elsewhere else len(raw)
                below_cursor = index < upload.resume_cursor
                zero = known.is_zero if known is not None else None
                data = raw
                if not sent_elsewhere:
                    data = raw if len(raw) == EBS_BLOCK_SIZE else pad_block(raw)
                if _skips_zero(has_parent, zero if zero is not None else data):
                    counters.zero_blocks_skipped += 1
                    next_unseen = index + 1
                    completed_since += retire()
                    maybe_checkpoint()
                    continue
                send = not below_cursor
                fut: Future[bytes]
                if known is not None and sent_elsewhere and send:
                    # The reader process sent it: settle the outcome here, in order.
                    if known.put is None:
                        raise RuntimeError(f"block {index} was planned, neither sent nor skipped")
                    failed = self.ebs.settle_put(upload.snapshot_id, index, known.put)
                    if failed is None:
                        fut = Future()
                        fut.set_result(known.digest)
                    else:
                        fut = submit(self._put_again, upload, known, failed)
                else:
                    fut = submit(
                        self._hash_and_put, upload, index, data, send,
                        known.digest if known is not None else None,
                    )
                if below_cursor:
                    counters.blocks_below_cursor += 1
                elif index <= upload.resume_high_water:
                    counters.blocks_resent_after_resume += 1
                inflight[index] = (fut, send)
                next_unseen = index + 1
                if send:
                    last_index = max(last_index, index)
                    upload.high_water = last_index
                completed_since += retire()
                maybe_checkpoint()
            while inflight:
                check_cancel()
                wait([f for f, _ in inflight.values()], timeout=0.2, return_when=FIRST_COMPLETED)
                completed_since += retire()
                maybe_checkpoint()
            next_unseen = max(next_unseen, last_seen + 1)
            update_cursor()
            upload.blocks_done = True
            counters.retries = self._retries
            maybe_checkpoint(force=True)
            return upload.checkpoint()
        except BaseException as exc:
            self._stop.set()
            executor.shutdown(wait=False, cancel_futures=True)
            # cancelled-but-never-started futures never count as done for wait(): skip them
            running = [f for f, _ in inflight.values() if not f.cancelled()]
            wait(running, timeout=s.cancel_grace_s)
            try:
                retire()
            except BaseException:
                pass  # the first failure is what we report
            counters.retries = self._retries
            if isinstance(exc, (EbsCallError, UploadCancelled)):
                exc.checkpoint = upload.checkpoint()
            if isinstance(exc, UploadCancelled):
                log.info("upload of %s cancelled at cursor %d", upload.snapshot_id, upload.cursor)
            raise
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ complete / wait

    def completion_mark(self, upload: SnapshotUpload) -> CompletionMark:
        """The ChangedBlocksCount and LINEAR aggregate CompleteSnapshot will carry."""
        if not upload.blocks_done:
            raise RuntimeError("complete() before put_blocks() finished")
        count = upload.aggregate.count
        return CompletionMark(count, upload.aggregate.b64() if count else "")

    def complete(self, upload: SnapshotUpload) -> str:
        """CompleteSnapshot with ChangedBlocksCount and the LINEAR aggregate; returns Status."""
        return self.complete_with(
            upload.snapshot_id, self.completion_mark(upload), upload.not_found_until
        )

    def complete_with(
        self, snapshot_id: str, mark: CompletionMark, not_found_until: float | None = None
    ) -> str:
        """CompleteSnapshot with given figures: also the repeat after a crash, which EBS checks
        against the blocks it holds and answers like the first call."""
        kwargs: dict[str, Any] = {
            "SnapshotId": snapshot_id,
            "ChangedBlocksCount": mark.changed_blocks,
        }
        if mark.changed_blocks:
            kwargs.update(
                Checksum=mark.checksum,
                ChecksumAlgorithm="SHA256",
                ChecksumAggregationMethod="LINEAR",
            )
        self._stop.clear()
        resp = self._call(
            "CompleteSnapshot",
            lambda: self.ebs.complete_snapshot(**kwargs),
            not_found_until,
        )
        return str(resp.get("Status", ""))

    def wait_completed(self, snapshot_id: str, timeout_s: float = 3600.0) -> str:
        """Poll EC2 DescribeSnapshots until the snapshot is completed; raise on error/timeout."""
        if self.ec2 is None:
            raise RuntimeError("wait_completed needs an EC2 client")
        self._stop.clear()
        deadline = time.monotonic() + timeout_s
        state = ""
        pause = min(self.settings.wait_poll_first_s, self.settings.wait_poll_s)
        missing_since: float | None = None
        while True:
            try:
                resp = self._call(
                    "DescribeSnapshots",
                    lambda: self.ec2.describe_snapshots(SnapshotIds=[snapshot_id]),
                )
                snaps = resp.get("Snapshots", [])
                state = str(snaps[0].get("State", "")) if snaps else ""
                message = str(snaps[0].get("StateMessage", "")) if snaps else ""
            except EbsCallError as exc:
                if exc.code != "InvalidSnapshot.NotFound":
                    raise
                state, message = "", ""
            if state:
                missing_since = None
            else:
                # EC2 may not show a new snapshot yet; one missing for longer was deleted, and
                # waiting the whole timeout for it (an hour) helps nobody.
                now = time.monotonic()
                missing_since = missing_since if missing_since is not None else now
                if now - missing_since >= self.settings.not_found_window_s:
                    raise EbsCallError(
                        "DescribeSnapshots",
                        "InvalidSnapshot.NotFound",
                        f"snapshot {snapshot_id} no longer exists (deleted)",
                    )
            if state == "completed":
                return state
            if state == "error":
                raise EbsCallError(
                    "DescribeSnapshots",
                    "SnapshotError",
                    f"snapshot {snapshot_id} entered the error state {message}".strip(),
                )
            if time.monotonic() >= deadline:
                raise SnapshotWaitTimeout(snapshot_id, state, timeout_s)
            if self.cancel.wait(min(pause, max(0.0, deadline - time.monotonic()))):
                raise UploadCancelled()
            pause = min(pause * 1.5, self.settings.wait_poll_s)


@dataclass
class ShipOutcome:
    """Result of shipping one disk's blocks into one EBS snapshot."""

    snapshot_id: str
    changed_blocks_count: int
    checksum: str
    counters: WriterCounters
    resumed: bool = False
    already_completed: bool = False
    """An earlier attempt had completed this snapshot (same ClientToken); nothing was sent."""


def ship_blocks(
    writer: EbsSnapshotWriter,
    blocks: Iterable[tuple[int, bytes]],
    *,
    volume_size_gib: int,
    parent_snapshot_id: str | None,
    client_token: str,
    tags: Mapping[str, str] | None = None,
    description: str = "",
    timeout_minutes: int = 60,
    checkpoint: Checkpoint | None = None,
    wait_timeout_s: float = 3600.0,
) -> ShipOutcome:
    """Start (or find again, by token) a snapshot, put the blocks, complete it, wait for it.

    The whole sequence is safe to repeat with the same arguments: StartSnapshot returns the same
    snapshot for the same token; a heartbeated `checkpoint` for that snapshot makes the attempt
    skip what was stored; a snapshot an earlier attempt already completed is returned as is.
    """
    upload = writer.start(
        volume_size_gib, parent_snapshot_id, client_token, tags, description, timeout_minutes
    )
    if upload.start_status == "completed":
        writer.wait_completed(upload.snapshot_id, wait_timeout_s)
        return ShipOutcome(upload.snapshot_id, -1, "", upload.counters, already_completed=True)
    resumed = checkpoint is not None and checkpoint.snapshot_id == upload.snapshot_id
    if checkpoint is not None and resumed:
        upload = writer.resume(
            upload.snapshot_id, checkpoint.cursor, parent_snapshot_id, checkpoint.high_water
        )
    writer.put_blocks(upload, blocks)
    writer.complete(upload)
    writer.wait_completed(upload.snapshot_id, wait_timeout_s)
    return ShipOutcome(
        upload.snapshot_id,
        upload.changed_blocks_count,
        upload.aggregate.b64(),
        upload.counters,
        resumed=resumed,
    )
