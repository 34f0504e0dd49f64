"""EBS direct API semantics: snapshots, block maps, lineage, idempotency, timeouts, sealing.

The rules follow AWS's documentation and botocore's ebs 2019-11-02 model (see
``/work/shared/reference/aws-ebs-direct-and-mgn-facts.md``), including what moto leaves out:
512 KiB blocks with checksum validation, ParentSnapshotId inheritance, ClientToken idempotency,
Timeout, writes only while pending, CompleteSnapshot checking ChangedBlocksCount and the LINEAR
aggregate checksum, asynchronous sealing, block tokens, sorted and paginated listings.

Each snapshot holds a full map ``block index -> BlockRef``. A child starts with a copy of its
parent's map (sharing the BlockRef objects, so the copy costs a dict slot per block, not data),
which keeps children complete and readable when the parent is deleted. A BlockRef is created per
written block, so "changed between two snapshots" is identity of BlockRefs, as in AWS where a
block rewritten in a child is a new block even if its bytes are equal.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.aws.blockstore import BlockStore
from sandbox.aws.clock import ScaledClock
from sandbox.aws.ec2_mirror import Ec2Mirror
from sandbox.aws.errors import EbsError, not_found, validation
from sandbox.aws.faults import FaultInjector
from sandbox.aws.tokens import BLOCK_TOKEN_TTL, PAGE_TOKEN_TTL, TokenSigner

BLOCK_SIZE = 524_288
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
MAX_VOLUME_GIB = 65_536
MIN_TIMEOUT_MIN, MAX_TIMEOUT_MIN, DEFAULT_TIMEOUT_MIN = 10, 4320, 60
MIN_RESULTS, MAX_RESULTS = 100, 10_000
DEFAULT_MAX_RESULTS = MAX_RESULTS
MAX_TAGS = 50
MAX_CLIENT_TOKEN = 64
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]+$")
KMS_ARN_RE = re.compile(r"arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*")
EMPTY_LINEAR = base64.b64encode(hashlib.sha256(b"").digest()).decode()


class BlockRef:
    """One written block: its content digest and the snapshot that wrote it."""

    __slots__ = ("digest", "origin")

    def __init__(self, digest: bytes, origin: str) -> None:
        self.digest = digest
        self.origin = origin


@dataclass(frozen=True)
class StartParams:
    """The parameters compared for ClientToken idempotency."""

    volume_size: int
    parent_id: str | None
    tags: tuple[tuple[str, str], ...]
    description: str | None
    encrypted: bool | None
    kms_key_arn: str | None
    timeout_min: int


@dataclass
class SnapshotRecord:
    """State of one snapshot as the EBS direct APIs see it."""

    snapshot_id: str
    region: str
    owner_id: str
    volume_size: int
    parent_id: str | None
    lineage: str
    tags: list[dict[str, str]]
    description: str | None
    encrypted: bool
    kms_key_arn: str | None
    timeout_min: int
    start_time: float  # virtual clock, epoch seconds
    start_mono: float  # real monotonic time, for the injected not-found window
    client_token: str | None
    params: StartParams | None
    blocks: dict[int, BlockRef] = field(default_factory=dict)
    written: dict[int, BlockRef] = field(default_factory=dict)
    state: str = "pending"  # pending | sealing | completed | error
    last_activity: float = 0.0  # virtual clock
    seal_at: float = 0.0  # real monotonic time
    progress: int = 0
    error_message: str | None = None
    complete_params: tuple[int, str | None] | None = None
    puts: int = 0
    inflight: set[int] = field(default_factory=set)
    foreign: bool = False
    _sorted: list[int] | None = None

    def sorted_indexes(self) -> list[int]:
        """Ascending block indexes; cached once the map can no longer change."""
        if self.state == "completed" and self._sorted is not None:
            return self._sorted
        keys = sorted(self.blocks)
        if self.state == "completed":
            self._sorted = keys
        return keys


class EbsDirectBackend:
    """The EBS direct APIs over a :class:`BlockStore`, mirrored into moto's EC2."""

    def __init__(
        self,
        data_dir: Path,
        faults: FaultInjector,
        clock: ScaledClock | None = None,
        mirror: Ec2Mirror | None = None,
        account_id: str | None = None,
    ) -> None:
        self.store = BlockStore(data_dir, BLOCK_SIZE)
        self.faults = faults
        self.clock = clock or ScaledClock()
        self.mirror = mirror
        self.account_id = account_id or (mirror.account_id if mirror else "123456789012")
        self.signer = TokenSigner()
        self._lock = threading.RLock()
        self.records: dict[str, SnapshotRecord] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._changed_cache: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._gc_needed = False

    # ----------------------------------------------------------------- state and lookup

    def status_of(self, rec: SnapshotRecord) -> str:
        """AWS-visible status (pending/completed/error), applying due transitions."""
        if rec.state == "sealing" and time.monotonic() >= rec.seal_at:
            rec.state = "completed"
        elif rec.state == "pending":
            idle = self.clock.now() - rec.last_activity
            if idle > rec.timeout_min * 60:
                rec.state = "error"
                rec.error_message = (
                    f"no PutSnapshotBlock or CompleteSnapshot within {rec.timeout_min} minutes"
                )
                self._gc_needed = True
        return "pending" if rec.state == "sealing" else rec.state

    def _drop(self, rec: SnapshotRecord) -> None:
        self.records.pop(rec.snapshot_id, None)
        if rec.client_token is not None:
            self._tokens.pop((rec.region, rec.client_token), None)
        for key in [k for k in self._changed_cache if rec.snapshot_id in k]:
            del self._changed_cache[key]
        self._gc_needed = True

    def _lookup(
        self, region: str, snapshot_id: str, *, fresh_window: bool = True
    ) -> SnapshotRecord:
        if len(snapshot_id) > 64 or not SNAPSHOT_ID_RE.match(snapshot_id):
            raise validation("INVALID_SNAPSHOT_ID", f"Invalid snapshot id '{snapshot_id}'.")
        rec = self.records.get(snapshot_id)
        if rec is not None and rec.region == region:
            if self.mirror is not None and not self.mirror.exists(rec):
                self._drop(rec)  # deleted through EC2 DeleteSnapshot
                raise not_found(snapshot_id)
            window = self.faults.settings.not_found_after_start_seconds
            if fresh_window and window > 0 and time.monotonic() - rec.start_mono < window:
                raise not_found(snapshot_id)
            self.status_of(rec)
            return rec
        if rec is None and self.mirror is not None:
            snap = self.mirror.foreign(region, snapshot_id)
            if snap is not None:
                return self._adopt_foreign(region, snap)
        raise not_found(snapshot_id)

    def _adopt_foreign(self, region: str, snap: Any) -> SnapshotRecord:
        """A snapshot moto made itself (no block data: moto volumes hold none) as an empty one."""
        now = self.clock.now()
        rec = SnapshotRecord(
            snapshot_id=snap.id,
            region=region,
            owner_id=str(snap.owner_id),
            volume_size=int(snap.volume.size),
            parent_id=None,
            lineage=snap.id,
            tags=[],
            description=snap.description,
            encrypted=bool(snap.encrypted),
            kms_key_arn=snap.kms_key_id,
            timeout_min=DEFAULT_TIMEOUT_MIN,
            start_time=now,
            start_mono=0.0,
            client_token=None,
            params=None,
            state="completed" if snap.status == "completed" else "error",
            last_activity=now,
            foreign=True,
        )
        self.records[rec.snapshot_id] = rec
        return rec

    def _pending_count(self, region: str) -> int:
        return sum(
            1
            for r in self.records.values()
            if r.region == region and self.status_of(r) == "pending"
        )

    # ----------------------------------------------------------------- StartSnapshot

    def start_snapshot(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        params = self._start_params(body)
        token = body.get("ClientToken")
        if token is not None and (
            not isinstance(token, str)
            or not token
            or len(token) > MAX_CLIENT_TOKEN
            or not token.isascii()
        ):
            raise validation(
                "INVALID_PARAMETER_VALUE",
                f"ClientToken must be 1 to {MAX_CLIENT_TOKEN} ASCII characters.",
            )
        with self._lock:
            if token is not None:
                existing_id = self._tokens.get((region, token))
                existing = self.records.get(existing_id) if existing_id else None
                if existing is not None:
                    if self.mirror is not None and not self.mirror.exists(existing):
                        self._drop(existing)
                    elif existing.params != params:
                        raise EbsError(
                            "ConflictException",
                            "The request uses the same client token as a previous, but "
                            "non-identical request.",
                        )
                    else:
                        return self._start_response(existing)
            encrypted = bool(params.encrypted) or params.kms_key_arn is not None
            kms = params.kms_key_arn
            lineage = ""
            parent: SnapshotRecord | None = None
            if params.parent_id is not None:
                parent = self._lookup(region, params.parent_id, fresh_window=False)
                if self.status_of(parent) != "completed":
                    raise validation(
                        "INVALID_PARAMETER_VALUE",
                        f"The parent snapshot '{parent.snapshot_id}' is not completed.",
                    )
                if params.volume_size < parent.volume_size:
                    raise validation(
                        "INVALID_VOLUME_SIZE",
                        f"VolumeSize {params.volume_size} is smaller than the parent snapshot's "
                        f"{parent.volume_size} GiB.",
                    )
                encrypted, kms = parent.encrypted, parent.kms_key_arn
                lineage = parent.lineage
            quota = self.faults.settings.pending_quota
            if self._pending_count(region) >= quota:
                code = self.faults.settings.pending_quota_error
                reason = "DEPENDENCY_SERVICE_QUOTA_EXCEEDED" if code == (
                    "ServiceQuotaExceededException") else None
                raise EbsError(
                    code,
                    f"You have reached the limit of {quota} pending snapshots.",
                    reason,
                )
            sid = self.mirror.new_snapshot_id(region) if self.mirror else self._new_id()
            now = self.clock.now()
            rec = SnapshotRecord(
                snapshot_id=sid,
                region=region,
                owner_id=self.account_id,
                volume_size=params.volume_size,
                parent_id=params.parent_id,
                lineage=lineage or sid,
                tags=[{"Key": k, "Value": v} for k, v in params.tags],
                description=params.description,
                encrypted=encrypted,
                kms_key_arn=kms,
                timeout_min=params.timeout_min,
                start_time=now,
                start_mono=time.monotonic(),
                client_token=token,
                params=params,
                blocks=dict(parent.blocks) if parent is not None else {},
                last_activity=now,
            )
            self.records[sid] = rec
            if token is not None:
                self._tokens[(region, token)] = sid
            if self.mirror is not None:
                self.mirror.create(rec, self._status_locked)
            return self._start_response(rec)

    def _status_locked(self, rec: SnapshotRecord) -> str:
        with self._lock:
            return self.status_of(rec)

    def _new_id(self) -> str:
        import secrets

        while True:
            sid = "snap-" + secrets.token_hex(9)[:17]
            if sid not in self.records:
                return sid

    def _start_params(self, body: dict[str, Any]) -> StartParams:
        size = body.get("VolumeSize")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_VOLUME_GIB:
            raise validation(
                "INVALID_VOLUME_SIZE",
                f"VolumeSize must be an integer from 1 to {MAX_VOLUME_GIB} GiB.",
            )
        timeout = body.get("Timeout", DEFAULT_TIMEOUT_MIN)
        if not isinstance(timeout, int) or not MIN_TIMEOUT_MIN <= timeout <= MAX_TIMEOUT_MIN:
            raise validation(
                "INVALID_PARAMETER_VALUE",
                f"Timeout must be {MIN_TIMEOUT_MIN} to {MAX_TIMEOUT_MIN} minutes.",
            )
        raw_tags = body.get("Tags") or []
        if not isinstance(raw_tags, list) or len(raw_tags) > MAX_TAGS:
            raise validation("INVALID_TAG", f"At most {MAX_TAGS} tags per snapshot.")
        tags: list[tuple[str, str]] = []
        for tag in raw_tags:
            key, value = tag.get("Key"), tag.get("Value", "")
            if (
                not isinstance(key, str)
                or not 1 <= len(key) <= 127
                or key.lower().startswith("aws:")
                or not isinstance(value, str)
                or len(value) > 255
            ):
                raise validation("INVALID_TAG", f"Invalid tag {tag!r}.")
            tags.append((key, value))
        if len({k for k, _ in tags}) != len(tags):
            raise validation("INVALID_TAG", "Duplicate tag keys.")
        description = body.get("Description")
        if description is not None and (not isinstance(description, str)
                                        or not 1 <= len(description) <= 255):
            raise validation("INVALID_PARAMETER_VALUE", "Description must be 1 to 255 characters.")
        parent_id = body.get("ParentSnapshotId")
        encrypted = body.get("Encrypted")
        if parent_id is not None and encrypted is not None:
            raise validation(
                "INVALID_PARAMETER_VALUE",
                "ParentSnapshotId and Encrypted cannot be specified in the same request.",
            )
        kms = body.get("KmsKeyArn")
        if kms is not None and (not isinstance(kms, str) or not KMS_ARN_RE.match(kms)):
            raise validation("INVALID_CUSTOMER_KEY", "KmsKeyArn is not a KMS key ARN.")
        return StartParams(
            volume_size=size,
            parent_id=parent_id,
            tags=tuple(tags),
            description=description,
            encrypted=encrypted,
            kms_key_arn=kms,
            timeout_min=timeout,
        )

    def _start_response(self, rec: SnapshotRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "SnapshotId": rec.snapshot_id,
            "OwnerId": rec.owner_id,
            "Status": self.status_of(rec),
            "StartTime": rec.start_time,
            "VolumeSize": rec.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if rec.tags:
            out["Tags"] = rec.tags
        if rec.parent_id:
            out["ParentSnapshotId"] = rec.parent_id
        if rec.description:
            out["Description"] = rec.description
        if rec.kms_key_arn:
            out["KmsKeyArn"] = rec.kms_key_arn
        out["SseType"] = ("sse-kms" if rec.kms_key_arn else "sse-ebs") if rec.encrypted else "none"
        return out

    # ----------------------------------------------------------------- PutSnapshotBlock

    def _check_index(self, rec: SnapshotRecord, index: int) -> None:
        if index < 0 or index >= rec.volume_size * BLOCKS_PER_GIB:
            raise validation(
                "INVALID_BLOCK",
                f"Block index {index} is outside the {rec.volume_size} GiB volume.",
            )

    def _writable(self, rec: SnapshotRecord) -> None:
        status = self.status_of(rec)
        if rec.state == "pending":
            return
        if status == "error":
            raise validation(
                "INVALID_SNAPSHOT_ID",
                f"The snapshot '{rec.snapshot_id}' is in the error state "
                f"({rec.error_message or 'timed out'}); it accepts no writes.",
            )
        raise validation(
            "INVALID_SNAPSHOT_ID",
            f"The snapshot '{rec.snapshot_id}' is not pending (completion was requested); "
            "it accepts no writes.",
        )

    def put_block(
        self,
        region: str,
        snapshot_id: str,
        index: int,
        data: bytes,
        data_length: int | None,
        checksum: str | None,
        algorithm: str | None,
        progress: int | None,
    ) -> str:
        """Store one block; returns the base64 SHA-256 AWS echoes back."""
        with self._lock:
            rec = self._lookup(region, snapshot_id)
            self._check_index(rec, index)
            if data_length is None or data_length != BLOCK_SIZE:
                raise validation(
                    "INVALID_PARAMETER_VALUE",
                    f"DataLength must be {BLOCK_SIZE}; got {data_length}.",
                )
            if algorithm != "SHA256":
                raise validation(
                    "INVALID_PARAMETER_VALUE", "ChecksumAlgorithm must be SHA256."
                )
            if not checksum:
                raise validation("INVALID_PARAMETER_VALUE", "Checksum is required.")
            if progress is not None and not 0 <= progress <= 100:
                raise validation("INVALID_PARAMETER_VALUE", "Progress must be 0 to 100.")
            self._writable(rec)
            if index in rec.inflight:
                raise validation(
                    "CONFLICTING_BLOCK_UPDATE",
                    f"Another write to block {index} of '{snapshot_id}' is in progress.",
                )
            rec.inflight.add(index)
        try:
            if len(data) != data_length:
                raise validation("INVALID_PARAMETER_VALUE", "Failed to read block data")
            digest = hashlib.sha256(data).digest()
            actual = base64.b64encode(digest).decode()
            if actual != checksum:
                raise validation(
                    "INVALID_PARAMETER_VALUE",
                    "The checksum of the block data does not match the provided checksum.",
                )
            self.faults.check_put_rate(snapshot_id)
            self.store.pin_and_store(digest, data)
            try:
                with self._lock:
                    if self.records.get(snapshot_id) is not rec:
                        raise not_found(snapshot_id)
                    self._writable(rec)
                    ref = BlockRef(digest, rec.snapshot_id)
                    rec.blocks[index] = ref
                    rec.written[index] = ref
                    rec.puts += 1
                    rec.last_activity = self.clock.now()
                    if progress is not None:
                        rec.progress = progress
            finally:
                self.store.unpin(digest)
        finally:
            with self._lock:
                rec.inflight.discard(index)
        return actual

    # ----------------------------------------------------------------- CompleteSnapshot

    def linear_checksum(self, rec: SnapshotRecord) -> str:
        joined = b"".join(rec.written[i].digest for i in sorted(rec.written))
        return base64.b64encode(hashlib.sha256(joined).digest()).decode()

    def complete(
        self,
        region: str,
        snapshot_id: str,
        changed_blocks: int | None,
        checksum: str | None,
        algorithm: str | None,
        aggregation: str | None,
    ) -> str:
        with self._lock:
            rec = self._lookup(region, snapshot_id)
            if changed_blocks is None or changed_blocks < 0:
                raise validation(
                    "INVALID_PARAMETER_VALUE", "ChangedBlocksCount is required and must be >= 0."
                )
            if checksum is not None:
                if algorithm != "SHA256":
                    raise validation(
                        "INVALID_PARAMETER_VALUE", "ChecksumAlgorithm must be SHA256."
                    )
                if aggregation != "LINEAR":
                    raise validation(
                        "INVALID_PARAMETER_VALUE", "ChecksumAggregationMethod must be LINEAR."
                    )
            status = self.status_of(rec)
            if rec.state in ("sealing", "completed"):
                if rec.complete_params == (changed_blocks, checksum):
                    return status
                raise validation(
                    "INVALID_SNAPSHOT_ID",
                    f"The snapshot '{snapshot_id}' was already completed with other parameters.",
                )
            if status == "error":
                raise validation(
                    "INVALID_SNAPSHOT_ID",
                    f"The snapshot '{snapshot_id}' is in the error state "
                    f"({rec.error_message or 'error'}).",
                )
            if changed_blocks != len(rec.written):
                raise validation(
                    "INVALID_PARAMETER_VALUE",
                    f"ChangedBlocksCount {changed_blocks} does not match the "
                    f"{len(rec.written)} blocks written to '{snapshot_id}'.",
                )
            if checksum is not None and checksum != self.linear_checksum(rec):
                raise validation(
                    "INVALID_PARAMETER_VALUE",
                    "The aggregated checksum does not match the blocks written to "
                    f"'{snapshot_id}'.",
                )
            rec.state = "sealing"
            rec.complete_params = (changed_blocks, checksum)
            rec.seal_at = time.monotonic() + self.faults.settings.complete_delay_seconds
            rec.last_activity = self.clock.now()
            return "pending"

    # ----------------------------------------------------------------- reads

    def _readable(self, rec: SnapshotRecord) -> None:
        status = self.status_of(rec)
        if status != "completed":
            raise validation(
                "INVALID_SNAPSHOT_ID",
                f"The snapshot '{rec.snapshot_id}' is {status}; blocks can only be read from "
                "a completed snapshot.",
            )

    def _block_token(self, ref: BlockRef, index: int, expiry: float) -> str:
        return self.signer.block_token(self._token_subject(ref, index), expiry)

    @staticmethod
    def _token_subject(ref: BlockRef, index: int) -> bytes:
        return f"{ref.origin}/{index}/".encode() + ref.digest

    def get_block(
        self, region: str, snapshot_id: str, index: int, token: str | None
    ) -> tuple[bytes, str]:
        with self._lock:
            rec = self._lookup(region, snapshot_id)
            self._readable(rec)
            self._check_index(rec, index)
            ref = rec.blocks.get(index)
            if (
                not token
                or ref is None
                or not self.signer.check_block_token(
                    token, self._token_subject(ref, index), self.clock.now()
                )
            ):
                raise validation(
                    "INVALID_BLOCK_TOKEN",
                    f"The block token is not valid for block {index} of '{snapshot_id}'.",
                )
        data = self.store.read(ref.digest)
        return data, base64.b64encode(ref.digest).decode()

    def _page_bounds(
        self,
        subject: bytes,
        keys: list[int],
        next_token: str | None,
        max_results: int | None,
        starting_index: int | None,
        now: float,
    ) -> tuple[list[int], str | None]:
        if max_results is not None and not MIN_RESULTS <= max_results <= MAX_RESULTS:
            raise validation(
                "INVALID_PARAMETER_VALUE",
                f"MaxResults must be {MIN_RESULTS} to {MAX_RESULTS}.",
            )
        limit = max_results or DEFAULT_MAX_RESULTS
        cap = self.faults.settings.list_max_page
        if cap > 0:
            limit = min(limit, cap)
        if next_token:
            start = self.signer.check_page_token(next_token, subject, now)
            if start is None:
                raise validation("INVALID_PAGE_TOKEN", "The page token is not valid.")
        else:
            if starting_index is not None and starting_index < 0:
                raise validation("INVALID_PARAMETER_VALUE", "StartingBlockIndex must be >= 0.")
            start = starting_index or 0
        pos = bisect.bisect_left(keys, start)
        if self.faults.empty_page() and pos < len(keys):
            return [], self.signer.page_token(subject, keys[pos], now + PAGE_TOKEN_TTL)
        page = keys[pos : pos + limit]
        token = None
        if pos + limit < len(keys):
            token = self.signer.page_token(subject, keys[pos + limit], now + PAGE_TOKEN_TTL)
        return page, token

    def list_blocks(
        self,
        region: str,
        snapshot_id: str,
        next_token: str | None,
        max_results: int | None,
        starting_index: int | None,
    ) -> dict[str, Any]:
        with self._lock:
            rec = self._lookup(region, snapshot_id)
            self._readable(rec)
            now = self.clock.now()
            keys = rec.sorted_indexes()
            page, token = self._page_bounds(
                f"list/{snapshot_id}".encode(), keys, next_token, max_results, starting_index, now
            )
            expiry = now + BLOCK_TOKEN_TTL
            blocks = [
                {"BlockIndex": i, "BlockToken": self._block_token(rec.blocks[i], i, expiry)}
                for i in page
            ]
        out: dict[str, Any] = {
            "Blocks": blocks,
            "ExpiryTime": expiry,
            "VolumeSize": rec.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if token:
            out["NextToken"] = token
        return out

    def _changed_indexes(self, first: SnapshotRecord | None, second: SnapshotRecord) -> list[int]:
        if first is None:
            return second.sorted_indexes()
        key = (first.snapshot_id, second.snapshot_id)
        cached = self._changed_cache.get(key)
        if cached is not None:
            self._changed_cache.move_to_end(key)
            return cached
        a, b = first.blocks, second.blocks
        changed = [i for i, ref in b.items() if a.get(i) is not ref]
        changed.extend(i for i in a if i not in b)
        changed.sort()
        self._changed_cache[key] = changed
        while len(self._changed_cache) > 32:
            self._changed_cache.popitem(last=False)
        return changed

    def list_changed(
        self,
        region: str,
        first_id: str | None,
        second_id: str,
        next_token: str | None,
        max_results: int | None,
        starting_index: int | None,
    ) -> dict[str, Any]:
        with self._lock:
            second = self._lookup(region, second_id)
            self._readable(second)
            first = None
            if first_id is not None:
                first = self._lookup(region, first_id)
                self._readable(first)
                if first.lineage != second.lineage:
                    raise validation(
                        "UNRELATED_SNAPSHOTS",
                        f"The snapshots '{first_id}' and '{second_id}' are not of the same "
                        "lineage.",
                    )
            now = self.clock.now()
            keys = self._changed_indexes(first, second)
            page, token = self._page_bounds(
                f"changed/{first_id}/{second_id}".encode(),
                keys,
                next_token,
                max_results,
                starting_index,
                now,
            )
            expiry = now + BLOCK_TOKEN_TTL
            entries: list[dict[str, Any]] = []
            for i in page:
                entry: dict[str, Any] = {"BlockIndex": i}
                ref1 = first.blocks.get(i) if first is not None else None
                ref2 = second.blocks.get(i)
                if ref1 is not None:
                    entry["FirstBlockToken"] = self._block_token(ref1, i, expiry)
                if ref2 is not None:
                    entry["SecondBlockToken"] = self._block_token(ref2, i, expiry)
                entries.append(entry)
        out: dict[str, Any] = {
            "ChangedBlocks": entries,
            "ExpiryTime": expiry,
            "VolumeSize": second.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if token:
            out["NextToken"] = token
        return out

    # ----------------------------------------------------------------- housekeeping

    def sweep(self) -> int:
        """Forget snapshots deleted through EC2, then delete block files nothing references."""
        with self._lock:
            if self.mirror is not None:
                for rec in list(self.records.values()):
                    if not self.mirror.exists(rec):
                        self._drop(rec)
            for rec in self.records.values():
                self.status_of(rec)
            if not self._gc_needed:
                return 0
            self._gc_needed = False
            live: set[bytes] = set()
            for rec in self.records.values():
                if rec.state == "error":
                    continue  # an errored snapshot's blocks can never be read
                live.update(ref.digest for ref in rec.blocks.values())
            # Called under our lock so no write can add a map entry between marking and sweeping.
            return self.store.collect(live)

    def describe(self, snapshot_id: str | None = None) -> list[dict[str, Any]]:
        """Debug view for the admin endpoint (snapshots deleted through EC2 are gone)."""
        self.sweep()
        with self._lock:
            recs = (
                [self.records[snapshot_id]]
                if snapshot_id is not None and snapshot_id in self.records
                else [] if snapshot_id is not None else list(self.records.values())
            )
            return [
                {
                    "SnapshotId": r.snapshot_id,
                    "Region": r.region,
                    "Status": self.status_of(r),
                    "VolumeSize": r.volume_size,
                    "ParentSnapshotId": r.parent_id,
                    "Blocks": len(r.blocks),
                    "WrittenBlocks": len(r.written),
                    "PutSnapshotBlockCalls": r.puts,
                    "Foreign": r.foreign,
                }
                for r in recs
            ]
