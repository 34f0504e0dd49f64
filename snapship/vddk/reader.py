"""DiskReader: one VM disk at one VMware snapshot, read through a VDDK reader process.

Shaped for snapshot shipping: `blocks()` yields each wanted 512 KiB EBS block with its SHA-256
and zero test already computed by the reader process (where the data is), keeping
`reads_in_flight` 2 MiB reads queued; `send_blocks()` also has the reader process send the
blocks a plan signs, straight from its shared memory (the worker touches no block bytes);
`read()`/`readinto()` serve arbitrary byte ranges. Each
DiskReader has its own reader process with one connection and one handle, so a crash or hang of
VDDK fails this disk's attempt only. Credentials are arguments, are never logged and do not appear
in repr(); the password crosses to the reader over a private socketpair, never argv or environ.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from snapship.blocks import EBS_BLOCK_SIZE, ZERO_BLOCK_SHA256, ReadRun, SourceBlock, read_runs
from snapship.ebs.curl_options import CurlOptions, SignedPut
from snapship.vddk.binding import (
    DEFAULT_TRANSPORT_MODES,
    MAX_CHUNK_NUMBER,
    MIN_CHUNK_SECTORS,
    SECTOR_SIZE,
    DiskInfo,
)
from snapship.vddk.process import ReaderProcess, VddkLibrary
from snapship.vddk.protocol import (
    SLOT_BYTES,
    CloseRequest,
    HttpPut,
    OpenReply,
    OpenRequest,
    QueryRequest,
    ReadReply,
    ReadRequest,
    SendReply,
    SendRequest,
    SendSetup,
)

log = logging.getLogger(__name__)

BLOCKS_PER_SLOT = SLOT_BYTES // EBS_BLOCK_SIZE

ABANDON_GRACE_S = 10.0
"""When the caller stops early (cancel, a failed block), how long its sends under way may take
to end before the reader process is stopped: a stalled endpoint must not hold a pause or a
retry for the HTTP timeout of every slot. (The writer gives its own calls the same grace.)"""

PutPlan = Callable[[int, bytes, bool], SignedPut | None]
"""(block index, SHA-256, is zero) -> the signed PUT to send for that block, or None to send
none (a zero block of a first sync, a block a resumed upload already stored)."""


@dataclass
class _Stage:
    """One slot's way through `send_blocks`: read and hashed, then (maybe) sent."""

    run: ReadRun
    slot: int
    read: Future[Any]
    sends: dict[int, tuple[Future[Any], int]] | None = None
    """Position in the run -> the reply to the send request holding its PUT, and the PUT's
    place in that request (None until the read is done and planned)."""
    digests: list[bytes] | None = None

    def read_submitted(self, fut: Future[Any]) -> None:
        self.read = fut

    def sent(self) -> bool:
        return self.sends is not None and all(f.done() for f, _ in self.sends.values())

    def pending(self) -> list[Future[Any]]:
        if self.sends is None:
            return [self.read]
        return list({id(f): f for f, _ in self.sends.values() if not f.done()}.values())


class DiskReader:
    """Read one snapshot disk through its own VDDK reader process; a context manager."""

    def __init__(
        self,
        library: VddkLibrary,
        *,
        server: str,
        port: int,
        thumbprint: str,
        username: str,
        password: str,
        vm_moref: str,
        snapshot_moref: str,
        disk_path: str,
        transport_modes: str = DEFAULT_TRANSPORT_MODES,
        send_window: int = 0,
    ) -> None:
        """`send_window`: blocks `send_blocks` may have in flight (0: this reader sends none);
        each four of them hold a 2 MiB slot of shared memory beyond the reads'."""
        self._where = (server, port, username, vm_moref, snapshot_moref, disk_path)
        self._closed = False
        self._lock = threading.Lock()
        self._sender_ready = False
        self._send_window = max(0, send_window)
        sending_slots = -(-self._send_window // BLOCKS_PER_SLOT)
        self._proc = ReaderProcess(
            library, f"disk {disk_path}", library.reads_in_flight + sending_slots
        )
        self._free: deque[int] = deque(range(self._proc.slots))
        self._slot_free = threading.Condition(self._lock)
        try:
            opened: OpenReply = self._proc.call(
                OpenRequest(
                    self._proc.next_id(), server, port, thumbprint, username, password,
                    vm_moref, snapshot_moref, disk_path, transport_modes,
                ),
                "connect and open",
            )
        except BaseException:
            self._proc.kill()
            self._proc.finish()
            raise
        self.info: DiskInfo = opened.info
        self.transport_mode = opened.transport_mode
        log.info(
            "vddk disk open: vm=%s snapshot=%s path=%s mode=%s capacity=%d reader=%d",
            vm_moref, snapshot_moref, disk_path, self.transport_mode, self.capacity,
            self._proc.pid,
        )

    def __repr__(self) -> str:
        server, port, user, vm, snap, path = self._where
        return (
            f"DiskReader(server={server!r}, port={port}, user={user!r}, password='***', "
            f"vm={vm!r}, snapshot={snap!r}, path={path!r})"
        )

    @property
    def capacity(self) -> int:
        """Disk size in bytes."""
        return self.info.capacity

    @property
    def reader_pid(self) -> int:
        """The reader process's pid (tests kill it; operators find it in ps)."""
        return self._proc.pid

    # ----- slots -------------------------------------------------------------------------------

    def _take_slot(self) -> int:
        with self._slot_free:
            while not self._free:
                self._slot_free.wait()
            return self._free.popleft()

    def _give_slot(self, slot: int) -> None:
        with self._slot_free:
            self._free.append(slot)
            self._slot_free.notify()

    def _read_request(self, slot: int, start_sector: int, num_sectors: int, hash_blocks: int
                      ) -> ReadRequest:
        if self._closed:
            raise ValueError("DiskReader is closed")
        return ReadRequest(self._proc.next_id(), slot, start_sector, num_sectors, hash_blocks)

    def _run_request(self, slot: int, run: ReadRun) -> ReadRequest:
        """Read `run` into `slot`, hashing each of its blocks."""
        sectors = -(-run.length(self.capacity) // SECTOR_SIZE)
        return self._read_request(slot, run.offset // SECTOR_SIZE, sectors, run.count)

    def _read_run(self, run: ReadRun) -> tuple[int, Future[Any]]:
        """Take a slot and read `run` into it, hashing each block; the slot and the reply."""
        slot = self._take_slot()
        try:
            return slot, self._proc.submit(self._run_request(slot, run))
        except BaseException:
            self._give_slot(slot)
            raise

    # ----- reads -------------------------------------------------------------------------------

    def blocks(self, indices: Iterable[int]) -> Iterator[SourceBlock]:
        """Yield SourceBlocks for ascending EBS block `indices`, hashed in the reader process.

        Consecutive blocks are read together (at most 2 MiB a read) with up to
        `reads_in_flight` reads queued; the tail block of a disk whose capacity is not a multiple
        of 512 KiB comes zero-padded. Each block's bytes are copied once, out of shared memory.
        """
        runs = iter(read_runs(indices, SLOT_BYTES))
        queued: deque[tuple[Any, int, Future[Any]]] = deque()
        try:
            while True:
                while len(queued) < self._proc.slots:
                    run = next(runs, None)
                    if run is None:
                        break
                    queued.append((run, *self._read_run(run)))
                if not queued:
                    return
                run, slot, fut = queued.popleft()
                try:
                    reply: ReadReply = self._proc.result(fut, None, "read")
                    base = slot * SLOT_BYTES
                    datas = [
                        bytes(self._proc.shm[base + i * EBS_BLOCK_SIZE:
                                             base + (i + 1) * EBS_BLOCK_SIZE])
                        for i in range(run.count)
                    ]
                finally:
                    self._give_slot(slot)
                for index, data, digest in zip(run.indices, datas, reply.digests, strict=True):
                    yield SourceBlock.of(index, data, digest)
        finally:
            for _run, slot, fut in queued:
                try:
                    fut.result(self._proc.library.reply_timeout_s)
                except Exception:
                    pass
                self._give_slot(slot)

    def send_blocks(
        self,
        indices: Iterable[int],
        plan: PutPlan,
        options: CurlOptions,
        stop: Callable[[], None] = lambda: None,
    ) -> Iterator[SourceBlock]:
        """Read, hash and send blocks for ascending `indices`; yield them in order as they end.

        A slot goes: read (at most `reads_in_flight` at once) -> `plan` signs a PUT for each of
        its blocks that must be sent, which go to the reader process together, or each as
        soon as it is signed when a throttle paced it (a budget paces blocks, not slots) -> the
        reader sends them from the slot -> the blocks are yielded with how each PUT ended
        (`SourceBlock.put`). Slots past the reads keep sends in flight while the next reads go
        on, up to the `send_window`.
        A failed PUT's block comes with its bytes, for the caller to retry. `stop` is called
        while waiting and raises to end early (the caller's cancel: a send can take as long as
        the endpoint lets it).
        """
        if not self._sender_ready:
            self._proc.call(
                SendSetup(self._proc.next_id(), options, max(1, self._send_window)),
                "sender start",
            )
            self._sender_ready = True
        limit = self._proc.library.reply_timeout_s + options.timeout_ms / 1000
        runs = iter(read_runs(indices, SLOT_BYTES))
        stages: deque[_Stage] = deque()
        try:
            while True:
                # One pass's new reads and sends go to the reader as one message (a Batch):
                # one write and one wake-up of the reader instead of one each.
                outgoing: list[tuple[Any, Callable[[Future[Any]], None]]] = []
                reading = sum(1 for st in stages if st.sends is None)
                while len(stages) < self._proc.slots and reading < self._proc.reads:
                    run = next(runs, None)
                    if run is None:
                        break
                    stage = _Stage(run, self._take_slot(), Future())
                    stages.append(stage)
                    outgoing.append((self._run_request(stage.slot, run), stage.read_submitted))
                    reading += 1
                if not stages:
                    return
                for st in stages:
                    if st.sends is None and st.read.done():
                        outgoing.extend(self._start_sends(st, plan))
                self._submit_all(outgoing)
                head = stages[0]
                if head.sent():
                    stages.popleft()
                    try:
                        done = self._sent(head)
                    finally:
                        self._give_slot(head.slot)
                    yield from done
                    continue
                waiting = [st.read for st in stages if st.sends is None] + head.pending()
                self._proc.wait_any(waiting, limit, "read or send", stop)
        finally:
            # Stopped early: the reader may still fill or send from these slots. What it sends
            # now counts for nothing (a retry resumes below it), so it gets a grace, no more.
            pending = [f for st in stages for f in st.pending()]
            if pending and not wait(pending, ABANDON_GRACE_S).not_done:
                for st in stages:
                    self._give_slot(st.slot)
            elif pending:
                log.info("vddk reader %d: sends still under way after %.0f s; stopping it",
                         self._proc.pid, ABANDON_GRACE_S)
                self._proc.kill()  # its slots die with it; close() finds it gone

    def _submit_all(self, outgoing: list[tuple[Any, Callable[[Future[Any]], None]]]) -> None:
        """Send requests in one message; each one's future goes where its callback puts it."""
        if not outgoing:
            return
        try:
            futures = self._proc.submit_all([request for request, _ in outgoing])
        except BaseException as exc:  # none went: each answer is this failure, not a wait
            futures = [Future() for _ in outgoing]
            for fut in futures:
                fut.set_exception(exc)
            for (_, deliver), fut in zip(outgoing, futures, strict=True):
                deliver(fut)
            raise
        for (_, deliver), fut in zip(outgoing, futures, strict=True):
            deliver(fut)

    def _start_sends(
        self, st: _Stage, plan: PutPlan
    ) -> list[tuple[SendRequest, Callable[[Future[Any]], None]]]:
        """Sign the slot's PUTs; a paced one goes to the reader at once, on its own (a budget
        paces blocks, not slots), the rest are returned to go with the pass's other requests."""
        reply: ReadReply = st.read.result()  # a failed read raises here, in order of arrival
        st.digests = reply.digests
        st.sends = {}
        batch: list[HttpPut] = []

        def request() -> tuple[SendRequest, Callable[[Future[Any]], None]]:
            puts = list(batch)
            batch.clear()

            def deliver(fut: Future[Any]) -> None:
                assert st.sends is not None
                for at, put in enumerate(puts):
                    st.sends[put.block] = (fut, at)

            return SendRequest(self._proc.next_id(), st.slot, puts), deliver

        for i, (index, digest) in enumerate(zip(st.run.indices, reply.digests, strict=True)):
            signed = plan(index, digest, digest == ZERO_BLOCK_SHA256)
            if signed is not None:
                batch.append(HttpPut(i, signed.url, signed.header_lines))
                if signed.paced:
                    self._submit_all([request()])
        return [request()] if batch else []

    def _sent(self, st: _Stage) -> list[SourceBlock]:
        assert st.sends is not None and st.digests is not None
        base = st.slot * SLOT_BYTES
        out: list[SourceBlock] = []
        for i, (index, digest) in enumerate(zip(st.run.indices, st.digests, strict=True)):
            sent = st.sends.get(i)
            result = None
            if sent is not None:
                reply: SendReply = sent[0].result()
                result = reply.results[sent[1]]
            data = b""
            if result is not None and not result.stored:  # the caller retries it: its bytes
                data = bytes(self._proc.shm[base + i * EBS_BLOCK_SIZE:
                                            base + (i + 1) * EBS_BLOCK_SIZE])
            out.append(
                SourceBlock(index, data, digest, digest == ZERO_BLOCK_SHA256, True, result)
            )
        return out

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the disk at the snapshot."""
        buf = bytearray(length)
        self.readinto(offset, buf)
        return bytes(buf)

    def readinto(self, offset: int, buffer: bytearray | memoryview) -> int:
        """Fill `buffer` with the disk's bytes starting at `offset`; returns the length."""
        out = memoryview(buffer).cast("B")
        length = len(out)
        if offset < 0 or offset + length > self.capacity:
            raise ValueError(
                f"range {offset}+{length} is outside the disk ({self.capacity} bytes)"
            )
        done = 0
        while done < length:
            pos = offset + done
            first = pos // SECTOR_SIZE
            skip = pos - first * SECTOR_SIZE
            n = min(length - done, SLOT_BYTES - skip)
            sectors = -(-(skip + n) // SECTOR_SIZE)
            slot = self._take_slot()
            try:
                self._proc.result(
                    self._proc.submit(self._read_request(slot, first, sectors, 0)), None, "read"
                )
                base = slot * SLOT_BYTES + skip
                out[done : done + n] = self._proc.shm[base : base + n]
            finally:
                self._give_slot(slot)
            done += n
        return length

    def allocated_ranges(
        self, chunk_sectors: int = MIN_CHUNK_SECTORS, start: int = 0, end: int | None = None
    ) -> list[tuple[int, int]]:
        """Allocated (offset, length) byte ranges in [start, end), at chunk granularity.

        Asks in whole chunks (only the disk's last chunk may be short), as VDDK requires.
        """
        if chunk_sectors < MIN_CHUNK_SECTORS:
            raise ValueError(f"chunk_sectors must be at least {MIN_CHUNK_SECTORS}")
        total = self.capacity // SECTOR_SIZE
        end_sector = total if end is None else min(total, (end + SECTOR_SIZE - 1) // SECTOR_SIZE)
        sector = (start // SECTOR_SIZE) // chunk_sectors * chunk_sectors
        window = chunk_sectors * (MAX_CHUNK_NUMBER // 2)
        ranges: list[tuple[int, int]] = []
        while sector < end_sector:
            n = min(window, end_sector - sector)
            if n % chunk_sectors and sector + n != total:
                n = min((n + chunk_sectors - 1) // chunk_sectors * chunk_sectors, total - sector)
            found = self._proc.call(
                QueryRequest(self._proc.next_id(), sector, n, chunk_sectors),
                "QueryAllocatedBlocks",
            )
            for off, ln in found:
                a, b = off * SECTOR_SIZE, (off + ln) * SECTOR_SIZE
                if ranges and ranges[-1][0] + ranges[-1][1] == a:
                    ranges[-1] = (ranges[-1][0], b - ranges[-1][0])
                else:
                    ranges.append((a, b - a))
            sector += n
        return ranges

    # ----- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the handle and connection in the reader, and let the process exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._proc.call(CloseRequest(self._proc.next_id()), "close")
        except Exception as exc:  # the process is gone or stuck: nothing left to close
            log.debug("vddk reader close: %s", exc)
            self._proc.kill()
        self._proc.finish()

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
