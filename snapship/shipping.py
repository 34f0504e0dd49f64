"""One VM's shipping step: changed areas -> 512 KiB blocks -> VDDK reads -> EBS snapshot.

Usable without Temporal: the activity passes in the connections, a cancel event, and a callback
that receives JSON-friendly checkpoints (it heartbeats them). Given the last checkpoint, a retried
attempt resumes: finished disks are not shipped again, a disk whose snapshot an earlier attempt
already sealed (see snapship/ebs/completion.py) is completed again without writing, and the
current disk continues from the cursor of the last checkpoint Temporal recorded.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from snapship.blocks import extents_to_blocks, volume_size_gib
from snapship.ebs.client import EbsCallError
from snapship.ebs.completion import CompletionMark, mark_completion, snapshot_state
from snapship.ebs.curl_options import CurlOptions
from snapship.ebs.groups import SnapshotTags
from snapship.ebs.writer import (
    Checkpoint,
    EbsSnapshotWriter,
    SnapshotUpload,
    UploadCancelled,
    WriterSettings,
    client_token,
)
from snapship.messages import DiskProgress, DiskShipPlan, DiskShipResult, ShipInput
from snapship.telemetry.metrics import METRICS, SnapshipMetrics
from snapship.vddk.process import VddkLibrary
from snapship.vddk.reader import DiskReader
from snapship.vsphere.cbt import query_changed_areas
from snapship.vsphere.errors import CbtResetRequired
from snapship.vsphere.session import VcenterSession

log = logging.getLogger(__name__)


@dataclass
class VddkEndpoint:
    """How VDDK reaches vCenter; the password is held only for ConnectEx."""

    server: str
    port: int
    thumbprint: str
    username: str
    password: str = field(repr=False)
    transport_modes: str = "nbdssl:nbd"


@dataclass
class DiskCheckpoint:
    """Where one disk's upload stands: its chain decision and the writer's checkpoint."""

    device_key: int
    full_sync: bool = False
    parent_snapshot_id: str | None = None
    writer: dict[str, Any] | None = None


@dataclass
class ShipCheckpoint:
    """Heartbeat details: finished disks, and the position inside each disk being shipped.

    Disks ship at the same time, so several can be in progress; each resumes from its own
    writer checkpoint, and a finished disk is never shipped again.
    """

    done: list[DiskShipResult] = field(default_factory=list)
    in_progress: list[DiskCheckpoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def disk(self, device_key: int) -> DiskCheckpoint | None:
        return next((d for d in self.in_progress if d.device_key == device_key), None)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ShipCheckpoint:
        if not raw:
            return cls()
        in_progress = [DiskCheckpoint(**d) for d in raw.get("in_progress", [])]
        if raw.get("device_key") is not None:
            # A heartbeat from a worker that shipped one disk at a time.
            in_progress.append(
                DiskCheckpoint(
                    device_key=int(raw["device_key"]),
                    full_sync=bool(raw.get("full_sync", False)),
                    parent_snapshot_id=raw.get("parent_snapshot_id"),
                    writer=raw.get("writer"),
                )
            )
        return cls(done=[DiskShipResult(**d) for d in raw.get("done", [])], in_progress=in_progress)


@dataclass
class ShipProgress:
    """Thread-safe per-disk progress for the status query."""

    disks: dict[int, DiskProgress] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> list[DiskProgress]:
        with self.lock:
            return [DiskProgress(**asdict(d)) for d in self.disks.values()]


class ShippingCancelled(Exception):
    """The run was cancelled while shipping; started EBS snapshots are listed for cleanup."""


class Shipper:
    """Ships all disks of one VMware snapshot for one run."""

    def __init__(
        self,
        session: VcenterSession,
        vddk: VddkLibrary,
        endpoint: VddkEndpoint,
        ebs: Any,
        ec2: Any,
        settings: WriterSettings | None = None,
        metrics: SnapshipMetrics | None = None,
        on_checkpoint: Callable[[ShipCheckpoint], None] | None = None,
        cancel: threading.Event | None = None,
        disks_in_parallel: int = 4,
    ) -> None:
        self.session = session
        self.vddk = vddk
        self.endpoint = endpoint
        self.ebs = ebs
        self.ec2 = ec2
        self.settings = settings or WriterSettings()
        self.metrics = metrics or METRICS
        self.on_checkpoint = on_checkpoint
        self.cancel = cancel or threading.Event()
        self.progress = ShipProgress()
        self.started_snapshot_ids: list[str] = []
        self.disks_in_parallel = max(1, disks_in_parallel)
        self._cp_lock = threading.RLock()
        self._done: dict[int, DiskShipResult] = {}
        self._in_progress: dict[int, DiskCheckpoint] = {}
        self.disk_settings = self.settings
        """Each disk writer's settings: its share of the VM's window while disks ship at once."""
        options = getattr(ebs, "block_send_options", None)
        self.send_options: CurlOptions | None = options() if callable(options) else None
        """With an EBS client that signs PUTs for others (`EbsBlockClient`), each disk's reader
        process sends its blocks itself, straight from its shared memory: the worker signs and
        settles, and touches no block's bytes unless a PUT must be retried. A plain boto3 client
        (no credentials to sign with) gets the blocks into the worker and sends them there."""

    def ship(self, inp: ShipInput, resume: ShipCheckpoint | None = None) -> list[DiskShipResult]:
        """Ship every disk not yet done, up to `disks_in_parallel` at once.

        One disk's permanent failure stops the others at their next block (each leaves a
        checkpoint) and is what this raises; cancellation raises `UploadCancelled`.
        """
        state = resume or ShipCheckpoint()
        for plan in inp.disks:
            with self.progress.lock:
                self.progress.disks[plan.device_key] = DiskProgress(
                    device_key=plan.device_key,
                    label=plan.label,
                    total_bytes=plan.capacity_bytes,
                    full_sync=plan.base_change_id is None,
                )
        keys = [p.device_key for p in inp.disks]
        self._done = {d.device_key: d for d in state.done if d.device_key in keys}
        # Resumed disks keep their position in every heartbeat until they report a newer one.
        self._in_progress = {d.device_key: d for d in state.in_progress if d.device_key in keys}
        for d in self._done.values():
            self.started_snapshot_ids.append(d.ebs_snapshot_id)
            with self.progress.lock:
                p = self.progress.disks[d.device_key]
                p.blocks_total = p.blocks_done = d.blocks_changed
        pending = [p for p in inp.disks if p.device_key not in self._done]
        if pending:
            self._ship_concurrently(inp, pending, state)
        return [self._done[k] for k in keys]

    def _ship_concurrently(
        self, inp: ShipInput, pending: list[DiskShipPlan], state: ShipCheckpoint
    ) -> None:
        """Run one thread per disk (bounded); this thread relays cancellation and failures.

        Writers watch `halt` rather than the caller's event, so a failed disk can stop its
        siblings without pretending the run was cancelled."""
        halt = threading.Event()
        failures: list[BaseException] = []
        at_once = max(1, min(self.disks_in_parallel, len(pending)))
        # The VM's window of calls in flight is shared by its disks, not multiplied by them: one
        # process's threads and buffers stay what one disk had (measured: 4 disks x 32 calls in
        # one worker process shipped slower than one disk after another).
        self.disk_settings = replace(
            self.settings, max_in_flight=max(1, -(-self.settings.max_in_flight // at_once))
        )
        with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="ship-disk") as pool:
            futures = [
                pool.submit(
                    contextvars.copy_context().run,
                    self._ship_disk_keeping_position,
                    inp,
                    plan,
                    state.disk(plan.device_key),
                    halt,
                )
                for plan in pending
            ]
            running = set(futures)
            while running:
                finished, running = wait(running, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    exc = fut.exception()
                    if exc is not None and not isinstance(exc, UploadCancelled):
                        failures.append(exc)
                if failures or self.cancel.is_set():
                    halt.set()
            cancelled = [f.exception() for f in futures if f.exception() is not None]
        if failures:
            raise failures[0]
        if cancelled or self.cancel.is_set():
            raise UploadCancelled()

    def _ship_disk_keeping_position(
        self,
        inp: ShipInput,
        plan: DiskShipPlan,
        resume: DiskCheckpoint | None,
        halt: threading.Event,
    ) -> None:
        """`_ship_disk`, and on the way out of a failed or halted upload, heartbeat the exact
        position the writer reached (its last periodic checkpoint may be older)."""
        try:
            self._ship_disk(inp, plan, resume, halt)
        except (EbsCallError, UploadCancelled) as exc:
            cp = exc.checkpoint
            with self._cp_lock:
                known = self._in_progress.get(plan.device_key)
                if cp is not None and known is not None:
                    self._in_progress[plan.device_key] = replace(known, writer=cp.to_dict())
            self._checkpoint()
            raise

    def _checkpoint(self) -> None:
        """Heartbeat the whole VM's position; built and sent under one lock so a newer
        position is never overtaken by an older one from another disk's thread."""
        with self._cp_lock:
            cp = ShipCheckpoint(
                done=list(self._done.values()), in_progress=list(self._in_progress.values())
            )
            if self.on_checkpoint is not None:
                self.on_checkpoint(cp)

    def _changed_blocks(self, inp: ShipInput, plan: DiskShipPlan, base: str) -> list[int]:
        extents = query_changed_areas(
            self.session,
            inp.vm_moref,
            inp.snapshot_moref,
            plan.device_key,
            plan.capacity_bytes,
            base,
        )
        return extents_to_blocks(extents, plan.capacity_bytes)

    def _sealed_mark(self, snapshot_id: str) -> CompletionMark | None:
        try:
            return snapshot_state(self.ec2, snapshot_id).mark
        except EbsCallError:
            return None

    def _finish_sealed(
        self,
        plan: DiskShipPlan,
        upload: SnapshotUpload,
        writer: EbsSnapshotWriter,
        sealed: CompletionMark,
        full: bool,
        blocks_changed: int,
        p: DiskProgress,
    ) -> None:
        """The disk's snapshot was sealed by another attempt of this run: complete it again
        with that attempt's count and aggregate (idempotent) and report it, writing nothing."""
        log.info(
            "disk %s: %s was already sealed by an earlier attempt (%d blocks); "
            "completing it again without writing",
            plan.device_key,
            upload.snapshot_id,
            sealed.changed_blocks,
        )
        writer.complete_with(upload.snapshot_id, sealed, upload.not_found_until)
        with self.progress.lock:
            p.blocks_done = blocks_changed
        self._disk_done(
            DiskShipResult(
                device_key=plan.device_key,
                disk_uuid=plan.disk_uuid,
                ebs_snapshot_id=upload.snapshot_id,
                full_sync=full,
                blocks_changed=blocks_changed,
                blocks_written=sealed.changed_blocks,
                zero_blocks_skipped=0,
                bytes_read=0,
                bytes_shipped=0,
                resumed_blocks=sealed.changed_blocks,
                resent_blocks=0,
            )
        )

    def _ship_disk(
        self,
        inp: ShipInput,
        plan: DiskShipPlan,
        resume: DiskCheckpoint | None,
        halt: threading.Event,
    ) -> None:
        full = plan.base_change_id is None
        parent = plan.parent_snapshot_id
        if resume is not None:
            full, parent = resume.full_sync, resume.parent_snapshot_id
        indices: list[int]
        if full:
            indices = self._changed_blocks(inp, plan, "*")
        else:
            try:
                indices = self._changed_blocks(inp, plan, plan.base_change_id or "*")
            except CbtResetRequired as err:
                # CBT lost track (hard power-off, corruption): the chain restarts from scratch.
                log.warning("disk %s: %s; shipping a full resync", plan.device_key, err)
                full, parent = True, None
                indices = self._changed_blocks(inp, plan, "*")
        with self.progress.lock:
            p = self.progress.disks[plan.device_key]
            p.blocks_total = len(indices)
            p.full_sync = full
            if full and plan.base_change_id is not None:
                p.note = "CBT reset by vCenter: full resync"

        def on_writer_checkpoint(cp: Checkpoint) -> None:
            with self.progress.lock:
                p.blocks_done = cp.counters.blocks_seen
                p.bytes_shipped = cp.counters.bytes_sent
            with self._cp_lock:
                self._in_progress[plan.device_key] = DiskCheckpoint(
                    plan.device_key, full, parent, cp.to_dict()
                )
            self._checkpoint()

        writer = EbsSnapshotWriter(
            self.ebs,
            self.ec2,
            self.disk_settings,
            cancel=halt,
            on_checkpoint=on_writer_checkpoint,
        )
        if resume is not None and resume.writer:
            cp = Checkpoint.from_dict(resume.writer)
            upload = writer.resume(cp.snapshot_id, cp.cursor, parent, cp.high_water)
        else:
            tags = SnapshotTags(
                group_id=inp.group_id,
                source_server=inp.source_server_id,
                disk_uuid=plan.disk_uuid,
                device_key=plan.device_key,
                run_id=inp.run_id,
                point_in_time=inp.point_in_time,
                vm_name=inp.vm_name,
                group_size=len(inp.disks),
            ).to_dict()
            upload = writer.start(
                volume_size_gib=volume_size_gib(plan.capacity_bytes),
                parent_snapshot_id=parent,
                client_token=client_token(
                    # Per run *attempt* (the group id): a retried attempt after a discard sends
                    # other tags, and reusing a token with other parameters is a conflict.
                    inp.source_server_id, plan.disk_uuid, plan.device_key, inp.group_id,
                    "full" if full else "incremental",
                ),
                tags=tags,
                description=f"snapship {inp.vm_name} disk {plan.device_key} {inp.run_id}",
            )
        with self._cp_lock:
            self.started_snapshot_ids.append(upload.snapshot_id)
        # Announce the snapshot id before the first block, so a crash right now still resumes.
        on_writer_checkpoint(upload.checkpoint())
        sealed = None
        if upload.start_status != "completed":
            # An earlier attempt may have requested completion after the checkpoint Temporal
            # recorded: that snapshot accepts no writes, and needs none.
            sealed = snapshot_state(self.ec2, upload.snapshot_id).mark
        if sealed is not None:
            self._finish_sealed(plan, upload, writer, sealed, full, len(indices), p)
            return
        if upload.start_status != "completed":
            if indices:
                with DiskReader(
                    self.vddk,
                    server=self.endpoint.server,
                    port=self.endpoint.port,
                    thumbprint=self.endpoint.thumbprint,
                    username=self.endpoint.username,
                    password=self.endpoint.password,
                    vm_moref=inp.vm_moref,
                    snapshot_moref=inp.snapshot_moref,
                    disk_path=plan.file_name,
                    transport_modes=self.endpoint.transport_modes,
                    send_window=self.disk_settings.max_in_flight if self.send_options else 0,
                ) as reader:
                    # Blocks arrive hashed and zero-tested by the reader process, which has
                    # also sent them when it can; the writer settles each in order.
                    def stop() -> None:
                        if halt.is_set():  # as the writer stops: cancel, or a sibling failed
                            raise UploadCancelled()

                    blocks = (
                        reader.send_blocks(
                            indices, writer.send_plan(upload), self.send_options, stop
                        )
                        if self.send_options is not None
                        else reader.blocks(indices)
                    )
                    try:
                        writer.put_blocks(upload, blocks)
                    except EbsCallError as err:
                        # An attempt that stalled past its heartbeat timeout and came back may
                        # have sealed this very snapshot (same run, same blocks) while this
                        # retry was writing: then it accepts no writes, and needs none.
                        late = None if err.retryable else self._sealed_mark(upload.snapshot_id)
                        if late is None:
                            raise
                        self._finish_sealed(plan, upload, writer, late, full, len(indices), p)
                        return
            else:
                # Nothing changed on this disk: no reader process and no VDDK connection (a
                # run with nothing changed spent most of its time starting them); the snapshot
                # is sealed empty on its parent.
                writer.put_blocks(upload, ())
            # Findable before it happens: a retry after a crash from here on must not write.
            mark_completion(self.ec2, upload.snapshot_id, writer.completion_mark(upload))
            writer.complete(upload)
        c = upload.counters
        labels = {"source_server": inp.source_server_id}
        self.metrics.bytes_read.labels(**labels).inc(c.bytes_read)
        self.metrics.bytes_shipped.labels(**labels).inc(c.bytes_sent)
        self.metrics.bytes_skipped_zero.labels(**labels).inc(
            c.zero_blocks_skipped * 524288
        )
        self.metrics.blocks_written.labels(**labels).inc(c.blocks_sent)
        with self.progress.lock:
            p.blocks_done = len(indices)
            p.bytes_shipped = c.bytes_sent
        result = DiskShipResult(
            device_key=plan.device_key,
            disk_uuid=plan.disk_uuid,
            ebs_snapshot_id=upload.snapshot_id,
            full_sync=full,
            blocks_changed=len(indices),
            blocks_written=c.blocks_sent,
            zero_blocks_skipped=c.zero_blocks_skipped,
            bytes_read=c.bytes_read,
            bytes_shipped=c.bytes_sent,
            resumed_blocks=c.blocks_below_cursor,
            resent_blocks=c.blocks_resent_after_resume,
        )
        self._disk_done(result)

    def _disk_done(self, result: DiskShipResult) -> None:
        with self._cp_lock:
            self._done[result.device_key] = result
            self._in_progress.pop(result.device_key, None)
        self._checkpoint()
