"""The VDDK reader process: the only place libvixDiskLib is loaded.

Started by the worker (snapship.vddk.process) with LD_LIBRARY_PATH naming the tarball's lib64 in
its start environment, because VDDK dlopen()s its own libraries by bare name and the loader reads
the variable only at process start. A process of its own also keeps VDDK's OpenSSL and libstdc++
away from the worker's, and a VDDK crash takes down one disk's reads, not the worker (nbdkit runs
VDDK the same way).

Threads, as VMware demands:
- main thread: InitEx (once, before any other thread), then every ConnectEx/Open/Close/
  Disconnect/QueryAllocatedBlocks, taken from a queue;
- one thread per disk handle: every ReadAsync/Wait of that handle, a bounded number in flight,
  and the SHA-256 of each 512 KiB block, computed where the data is;
- a receiver thread that only routes requests from the control socket;
- the sender's thread (snapship.vddk.sender), when the worker asks the reader to send blocks:
  libcurl PUTs the worker signed, bodies straight from the slots. It never calls VDDK.
When the worker goes away (socket closed), the reader waits for its reads, closes and exits.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import logging
import mmap
import os
import queue
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.vddk.binding import (
    SECTOR_SIZE,
    CompletionFunc,
    VixDiskLib,
)
from snapship.vddk.binding import Connection as VddkConnection
from snapship.vddk.errors import VIX_OK, VddkError, error_code
from snapship.vddk.protocol import (
    SLOT_BYTES,
    Batch,
    CloseRequest,
    LogRecord,
    OpenReply,
    OpenRequest,
    QueryRequest,
    ReadReply,
    ReadRequest,
    Reply,
    SendRequest,
    SendSetup,
)

if TYPE_CHECKING:
    from snapship.vddk.sender import Sender

log = logging.getLogger("snapship.vddk.reader_process")

_ZEROS = bytes(EBS_BLOCK_SIZE)


class Channel:
    """The control socket; sends come from several threads, so they take a lock."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._lock:
            try:
                self.conn.send(message)
            except OSError:
                pass  # the worker is gone; the receiver sees EOF and shuts down


class ChannelLogHandler(logging.Handler):
    """Forwards this process's log records to the worker (which owns formatting and sinks)."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.channel.send(LogRecord(record.levelno, record.getMessage()))
        except Exception:  # pragma: no cover - logging must never raise
            pass


class HandleThread(threading.Thread):
    """Every read call of one disk handle: ReadAsync with at most `in_flight` queued, then hash."""

    def __init__(
        self, lib: VixDiskLib, handle: int, shm: mmap.mmap, channel: Channel, in_flight: int
    ) -> None:
        super().__init__(name="vddk-handle", daemon=True)
        self.lib = lib
        self.handle = handle
        self.view = memoryview(shm)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(shm))
        self.channel = channel
        self.in_flight = in_flight
        self.requests: queue.SimpleQueue[ReadRequest | None] = queue.SimpleQueue()
        self._completions: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        # kept alive as long as the handle: VDDK calls it from its own thread
        self._callback = CompletionFunc(self._on_complete)

    def _on_complete(self, cb_data: int | None, result: int) -> None:
        self._completions.put((int(cb_data or 0), int(result)))

    def run(self) -> None:
        pending: dict[int, ReadRequest] = {}
        stopping = False
        try:
            while pending or not stopping:
                while not stopping and len(pending) < self.in_flight:
                    try:
                        req = self.requests.get(block=not pending)
                    except queue.Empty:
                        break
                    if req is None:
                        stopping = True
                        break
                    try:
                        self.lib.read_async(
                            self.handle, req.start_sector, req.num_sectors,
                            self.base + req.slot * SLOT_BYTES, self._callback, req.req_id,
                        )
                    except (VddkError, ValueError) as exc:
                        self.channel.send(Reply(req.req_id, error=exc))
                        continue
                    pending[req.req_id] = req
                if pending:
                    req_id, result = self._completions.get()
                    self._finish(pending.pop(req_id), result)
        finally:
            try:
                self.lib.wait(self.handle)  # before Close, from the handle's own thread
            except VddkError as exc:
                log.warning("VixDiskLib_Wait failed: %s", exc)

    def _finish(self, req: ReadRequest, result: int) -> None:
        if error_code(result) != VIX_OK:
            err = VddkError(result, self.lib.error_text(result), "VixDiskLib_ReadAsync")
            self.channel.send(Reply(req.req_id, error=err))
            return
        digests: list[bytes] = []
        if req.hash_blocks:
            start = req.slot * SLOT_BYTES
            read = req.num_sectors * SECTOR_SIZE
            padded = req.hash_blocks * EBS_BLOCK_SIZE
            if padded > read:  # a partial tail block ships zero-padded
                self.view[start + read : start + padded] = _ZEROS[: padded - read]
            for i in range(req.hash_blocks):
                block = self.view[start + i * EBS_BLOCK_SIZE : start + (i + 1) * EBS_BLOCK_SIZE]
                digests.append(hashlib.sha256(block).digest())
        self.channel.send(Reply(req.req_id, ReadReply(digests)))


class ReaderProcess:
    """Main-thread state: the library, the open connection and handle, the handle's thread."""

    def __init__(self, lib: VixDiskLib, shm: mmap.mmap, channel: Channel, in_flight: int) -> None:
        self.lib = lib
        self.shm = shm
        self.channel = channel
        self.in_flight = in_flight
        self.control: queue.SimpleQueue[OpenRequest | QueryRequest | CloseRequest | None] = (
            queue.SimpleQueue()
        )
        self.conn: VddkConnection | None = None
        self.handle: int | None = None
        self.reader: HandleThread | None = None
        self.sender: Sender | None = None

    def route(self, message: Any) -> None:
        """Receiver thread: reads go to the handle's thread, sends to the sender's thread,
        everything else to the main one."""
        if isinstance(message, Batch):
            for request in message.requests:
                self.route(request)
        elif isinstance(message, ReadRequest):
            if self.reader is None:
                self.channel.send(Reply(message.req_id, error=RuntimeError("no disk is open")))
            else:
                self.reader.requests.put(message)
        elif isinstance(message, SendSetup):
            if self.sender is None:
                from snapship.vddk.sender import Sender  # only readers that send load libcurl

                self.sender = Sender(memoryview(self.shm), self.channel, message)
            self.channel.send(Reply(message.req_id, "ready"))
        elif isinstance(message, SendRequest):
            if self.sender is None:
                self.channel.send(Reply(message.req_id, error=RuntimeError("no sender is set up")))
            else:
                self.sender.submit(message)
        else:
            self.control.put(message)

    def serve(self) -> None:
        """Main thread: run control requests until Close or the worker goes away."""
        while True:
            req = self.control.get()
            if req is None or isinstance(req, CloseRequest):
                self.close()
                if req is not None:
                    self.channel.send(Reply(req.req_id))
                return
            try:
                result = self._open(req) if isinstance(req, OpenRequest) else self._query(req)
            except VddkError as exc:
                self.channel.send(Reply(req.req_id, error=exc))
            else:
                self.channel.send(Reply(req.req_id, result))

    def _open(self, req: OpenRequest) -> OpenReply:
        if self.handle is not None:
            raise VddkError(1, "this reader process already has a disk open", "VixDiskLib_Open")
        conn = self.lib.connect(
            server=req.server, port=req.port, thumbprint=req.thumbprint, username=req.username,
            password=req.password, vm_moref=req.vm_moref, snapshot_moref=req.snapshot_moref,
            transport_modes=req.transport_modes,
        )
        try:
            handle = self.lib.open(conn, req.disk_path)
        except BaseException:
            self.lib.disconnect(conn)
            raise
        self.conn, self.handle = conn, handle
        info = self.lib.get_info(handle)
        mode = self.lib.transport_mode(handle)
        self.reader = HandleThread(self.lib, handle, self.shm, self.channel, self.in_flight)
        self.reader.start()
        return OpenReply(info, mode)

    def _query(self, req: QueryRequest) -> list[tuple[int, int]]:
        if self.handle is None:
            raise VddkError(3, "no disk is open", "VixDiskLib_QueryAllocatedBlocks")
        return self.lib.query_allocated_blocks(
            self.handle, req.start_sector, req.num_sectors, req.chunk_sectors
        )

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None
        if self.reader is not None:
            self.reader.requests.put(None)
            self.reader.join()
            self.reader = None
        if self.handle is not None:
            try:
                self.lib.close(self.handle)
            except VddkError as exc:
                log.warning("VixDiskLib_Close failed: %s", exc)
            self.handle = None
        if self.conn is not None:
            try:
                self.lib.disconnect(self.conn)
            except VddkError as exc:
                log.warning("VixDiskLib_Disconnect failed: %s", exc)
            self.conn = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="snapship VDDK reader process (started by the worker)")
    ap.add_argument("--control-fd", type=int, required=True)
    ap.add_argument("--shm-fd", type=int, required=True)
    ap.add_argument("--slots", type=int, required=True)
    ap.add_argument(
        "--reads", type=int, default=0, help="ReadAsync calls in flight (default: --slots)"
    )
    ap.add_argument("--lib", type=Path, required=True)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--log-level", type=int, default=logging.INFO)
    ap.add_argument("--label", default="", help="what this reader reads (for ps)")
    args = ap.parse_args(argv)
    channel = Channel(Connection(args.control_fd))
    root = logging.getLogger()
    root.handlers[:] = [ChannelLogHandler(channel)]
    root.setLevel(args.log_level)
    shm = mmap.mmap(args.shm_fd, args.slots * SLOT_BYTES)
    os.close(args.shm_fd)
    try:
        lib = VixDiskLib(args.lib, args.config)  # InitEx, in the main thread, before any other
    except (OSError, VddkError) as exc:
        channel.send(Reply(0, error=exc if isinstance(exc, VddkError) else RuntimeError(
            f"cannot load {args.lib}: {exc}")))
        return 2
    channel.send(Reply(0, result="ready"))
    proc = ReaderProcess(lib, shm, channel, in_flight=args.reads or args.slots)

    def receive() -> None:
        while True:
            try:
                message = channel.conn.recv()
            except (EOFError, OSError):
                proc.control.put(None)  # the worker is gone: close and exit
                return
            proc.route(message)

    threading.Thread(target=receive, name="vddk-receiver", daemon=True).start()
    try:
        proc.serve()
    finally:
        lib.exit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
