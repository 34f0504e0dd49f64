"""DiskReader: one VM disk at one VMware snapshot, read through VDDK by byte ranges.

Shaped for snapshot shipping: callers ask for arbitrary byte ranges (EBS blocks of 512 KiB),
the reader turns them into sector-aligned reads of at most 2 MiB. VDDK handles must not be used
by two threads at once, so the reader keeps a small pool of (connection, handle) pairs: a thread
borrows one for a read and gives it back, and at most `max_handles` exist at a time.
Credentials are arguments, are never logged and do not appear in repr().
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from types import TracebackType

from snapship.vddk.binding import (
    DEFAULT_TRANSPORT_MODES,
    MAX_CHUNK_NUMBER,
    MIN_CHUNK_SECTORS,
    SECTOR_SIZE,
    VIX_E_HOST_TCP_CONN_LOST,
    VIX_E_HOST_TCP_SOCKET_ERROR,
    DiskInfo,
    VddkError,
    VixDiskLib,
)

# Errors after which a new connection usually works (network blips, NBD server restarts).
TRANSIENT_ERRORS = frozenset({VIX_E_HOST_TCP_CONN_LOST, VIX_E_HOST_TCP_SOCKET_ERROR})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VddkTarget:
    """Where to connect and which disk to open (no secrets except the password field)."""

    server: str
    port: int
    thumbprint: str
    username: str
    password: str = field(repr=False)
    vm_moref: str
    snapshot_moref: str
    disk_path: str
    transport_modes: str = DEFAULT_TRANSPORT_MODES


@dataclass(eq=False)
class _Slot:
    conn: int
    handle: int


class DiskReader:
    """Read one snapshot disk through VDDK; a context manager that closes every handle."""

    def __init__(
        self,
        lib: VixDiskLib,
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
        max_handles: int = 4,
        retries: int = 2,
    ) -> None:
        if max_handles < 1:
            raise ValueError("max_handles must be at least 1")
        self._lib = lib
        self._target = VddkTarget(
            server, port, thumbprint, username, password, vm_moref, snapshot_moref, disk_path,
            transport_modes,
        )
        self._max = max_handles
        self._retries = retries
        self._idle: queue.LifoQueue[_Slot] = queue.LifoQueue()
        self._all: list[_Slot] = []
        self._opening = 0
        self._lock = threading.Lock()
        self._closed = False
        # Open the first handle now: bad credentials or paths fail here, not mid-copy.
        slot = self._open_slot()
        self._idle.put(slot)
        try:
            self.info: DiskInfo = lib.get_info(slot.handle)
            self.transport_mode = lib.transport_mode(slot.handle)
        except BaseException:
            self.close()
            raise
        log.info(
            "vddk disk open: vm=%s snapshot=%s path=%s mode=%s capacity=%d",
            vm_moref, snapshot_moref, disk_path, self.transport_mode, self.capacity,
        )

    def __repr__(self) -> str:
        t = self._target
        return (
            f"DiskReader(server={t.server!r}, port={t.port}, user={t.username!r}, "
            f"password='***', vm={t.vm_moref!r}, snapshot={t.snapshot_moref!r}, "
            f"path={t.disk_path!r})"
        )

    @property
    def capacity(self) -> int:
        """Disk size in bytes."""
        return self.info.capacity

    # ----- handle pool -----------------------------------------------------------------------

    def _open_slot(self) -> _Slot:
        t = self._target
        conn = self._lib.connect(
            server=t.server, port=t.port, thumbprint=t.thumbprint, username=t.username,
            password=t.password, vm_moref=t.vm_moref, snapshot_moref=t.snapshot_moref,
            transport_modes=t.transport_modes,
        )
        try:
            handle = self._lib.open(conn, t.disk_path)
        except BaseException:
            self._lib.disconnect(conn)
            raise
        slot = _Slot(conn, handle)
        with self._lock:
            self._all.append(slot)
        return slot

    def _borrow(self) -> _Slot:
        if self._closed:
            raise ValueError("DiskReader is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            can_open = self._opening + len(self._all) < self._max
            if can_open:
                self._opening += 1  # reserve the place while opening
        if not can_open:
            return self._idle.get()
        try:
            return self._open_slot()
        finally:
            with self._lock:
                self._opening -= 1

    def _discard(self, slot: _Slot) -> None:
        with self._lock:
            if slot in self._all:
                self._all.remove(slot)
        self._close_slot(slot)

    def _close_slot(self, slot: _Slot) -> None:
        try:
            self._lib.close(slot.handle)
        except Exception as exc:  # closing is best effort
            log.warning("vddk close failed: %s", exc)
        try:
            self._lib.disconnect(slot.conn)
        except Exception as exc:
            log.warning("vddk disconnect failed: %s", exc)

    # ----- reads -----------------------------------------------------------------------------

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
        if length == 0:
            return 0
        first = offset // SECTOR_SIZE
        last = (offset + length + SECTOR_SIZE - 1) // SECTOR_SIZE
        aligned = offset % SECTOR_SIZE == 0 and length % SECTOR_SIZE == 0
        tmp = None if aligned else bytearray((last - first) * SECTOR_SIZE)
        attempt = 0
        while True:
            slot = self._borrow()
            try:
                if tmp is None:
                    self._lib.read_into(slot.handle, first, out, 0, last - first)
                else:
                    self._lib.read_into(slot.handle, first, tmp, 0, last - first)
            except VddkError as exc:
                # After a transport failure the handle is dead in real VDDK: drop it, so the
                # next read connects again; retry a few times before giving up.
                self._discard(slot)
                if exc.code not in TRANSIENT_ERRORS or attempt >= self._retries:
                    raise
                attempt += 1
                log.warning("vddk read %d+%d failed (%s), retry %d/%d", offset, length,
                            exc.text, attempt, self._retries)
                continue
            except BaseException:
                self._idle.put(slot)
                raise
            self._idle.put(slot)
            break
        if tmp is not None:
            skip = offset - first * SECTOR_SIZE
            out[:] = memoryview(tmp)[skip : skip + length]
        return length

    def allocated_ranges(
        self, chunk_sectors: int = MIN_CHUNK_SECTORS, start: int = 0, end: int | None = None
    ) -> list[tuple[int, int]]:
        """Allocated (offset, length) byte ranges in [start, end), at chunk granularity."""
        if chunk_sectors < MIN_CHUNK_SECTORS:
            raise ValueError(f"chunk_sectors must be at least {MIN_CHUNK_SECTORS}")
        total = self.capacity // SECTOR_SIZE
        end_sector = total if end is None else min(total, (end + SECTOR_SIZE - 1) // SECTOR_SIZE)
        sector = (start // SECTOR_SIZE) // chunk_sectors * chunk_sectors
        window = chunk_sectors * (MAX_CHUNK_NUMBER // 2)
        ranges: list[tuple[int, int]] = []
        slot = self._borrow()
        try:
            while sector < end_sector:
                n = min(window, end_sector - sector)
                if n % chunk_sectors and sector + n != total:
                    n = (n + chunk_sectors - 1) // chunk_sectors * chunk_sectors
                    n = min(n, total - sector)
                for off, ln in self._lib.query_allocated_blocks(
                    slot.handle, sector, n, chunk_sectors
                ):
                    a, b = off * SECTOR_SIZE, (off + ln) * SECTOR_SIZE
                    if ranges and ranges[-1][0] + ranges[-1][1] == a:
                        ranges[-1] = (ranges[-1][0], b - ranges[-1][0])
                    else:
                        ranges.append((a, b - a))
                sector += n
        finally:
            self._idle.put(slot)
        return ranges

    # ----- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every handle and connection (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            slots = list(self._all)
            self._all.clear()
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for slot in slots:
            self._close_slot(slot)

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
