"""Worker side of a VDDK reader process: start it, talk to it, notice when it dies or hangs.

`VddkLibrary` is what the worker knows about VDDK: the library path (never loaded here), the
settings for the config file and where that file lives. `ReaderProcess` is one running reader:
`python -m snapship.vddk.server` started with LD_LIBRARY_PATH=<distrib>/lib64 in its start
environment, a socketpair for control messages and a memfd both processes map for the data.
A receiver thread turns replies into futures and re-logs the reader's log records; if the process
exits, every pending call fails with `VddkReaderDied` naming how it ended; if a reply does not come
within `reply_timeout_s`, the process is killed and the call fails with `VddkReaderHung`.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from snapship.vddk.config_file import VddkSettings, write_config
from snapship.vddk.errors import VddkReaderDied, VddkReaderError, VddkReaderHung
from snapship.vddk.protocol import SLOT_BYTES, Batch, LogRecord, Reply

log = logging.getLogger(__name__)
reader_log = logging.getLogger("snapship.vddk.reader_process")

START_TIMEOUT_S = 60.0
POLL_S = 0.2
"""How often a long wait for the reader looks at its caller's cancel."""


@dataclass
class VddkLibrary:
    """How to start reader processes for one installed VDDK (the worker never dlopen()s it)."""

    lib_path: Path
    work_dir: Path
    """Holds vixDiskLib.conf and VDDK's tmpDirectory; private to this worker (mode 0700)."""
    settings: VddkSettings = field(default_factory=VddkSettings)
    reads_in_flight: int = 4
    """ReadAsync calls queued per handle (each one 2 MiB slot of shared memory)."""
    config_file: Path | None = None

    def __post_init__(self) -> None:
        self.lib_path = Path(self.lib_path)
        self.config_file = write_config(self.settings, Path(self.work_dir))

    @property
    def lib64(self) -> Path:
        return self.lib_path.parent

    @property
    def reply_timeout_s(self) -> float:
        """Longest wait for one answer: the NFC timeouts end a stuck call before this does."""
        s = self.settings
        return max(s.read_timeout_ms, s.accept_timeout_ms, s.request_timeout_ms) / 1000 + 30

    def check(self) -> None:
        """Start one reader (InitEx with our config file) and stop it: raises what would fail
        every disk (a missing companion library, a bad config file), before any VM ships."""
        from snapship.vddk.protocol import CloseRequest

        proc = ReaderProcess(self, "start-up check")
        try:
            proc.call(CloseRequest(proc.next_id()), "close")
        finally:
            proc.finish()

    def start_environment(self) -> dict[str, str]:
        """The reader's start environment: the worker's, with LD_LIBRARY_PATH first on lib64."""
        env = dict(os.environ)
        rest = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = str(self.lib64) + (f":{rest}" if rest else "")
        return env


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class ReaderProcess:
    """One running reader process and its control channel."""

    def __init__(self, library: VddkLibrary, label: str, slots: int | None = None) -> None:
        self.library = library
        self.label = label
        self.reads = library.reads_in_flight
        self.slots = max(slots or 0, self.reads)
        """Shared-memory slots: reads in flight, plus those whose blocks are being sent."""
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._dead: str | None = None
        memfd = os.memfd_create("snapship-vddk", os.MFD_CLOEXEC)
        parent_sock, child_sock = socket.socketpair()
        try:
            os.ftruncate(memfd, self.slots * SLOT_BYTES)
            self.shm = mmap.mmap(memfd, self.slots * SLOT_BYTES)
            child_fd = child_sock.fileno()
            os.set_inheritable(child_fd, True)
            os.set_inheritable(memfd, True)
            cmd = [
                sys.executable, "-m", "snapship.vddk.server",
                "--control-fd", str(child_fd), "--shm-fd", str(memfd),
                "--slots", str(self.slots), "--reads", str(self.reads),
                "--lib", str(library.lib_path),
                "--log-level", str(logging.getLogger().getEffectiveLevel()),
                "--label", label,  # shows in ps: which disk this reader serves
            ]
            if library.config_file is not None:
                cmd += ["--config", str(library.config_file)]
            self.proc = subprocess.Popen(
                cmd,
                env=library.start_environment(),
                pass_fds=(child_fd, memfd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_sock.close()
            os.close(memfd)
        self.conn = Connection(os.dup(parent_sock.fileno()))
        parent_sock.close()
        self._send_lock = threading.Lock()
        ready: Future[Any] = Future()
        self._pending[0] = ready
        self._receiver = threading.Thread(
            target=self._receive, name=f"vddk-reader-{self.proc.pid}", daemon=True
        )
        self._receiver.start()
        try:
            self.result(ready, START_TIMEOUT_S, "start")
        except BaseException:
            self.kill()
            raise
        log.debug("vddk reader process %d started for %s", self.proc.pid, label)

    @property
    def pid(self) -> int:
        return self.proc.pid

    # ----- messages ------------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def submit(self, request: Any) -> Future[Any]:
        """Send a request (with its req_id) and return the future of its reply."""
        return self.submit_all([request])[0]

    def submit_all(self, requests: list[Any]) -> list[Future[Any]]:
        """Send requests in one message (a Batch when there are several); their futures."""
        futures: list[Future[Any]] = [Future() for _ in requests]
        with self._lock:
            if self._dead is not None:
                raise VddkReaderDied(self._dead)
            for request, fut in zip(requests, futures, strict=True):
                self._pending[request.req_id] = fut
        try:
            with self._send_lock:
                self.conn.send(requests[0] if len(requests) == 1 else Batch(requests))
        except OSError:
            self._on_exit()
        return futures

    def call(self, request: Any, what: str, timeout: float | None = None) -> Any:
        return self.result(self.submit(request), timeout, what)

    def result(self, fut: Future[Any], timeout: float | None, what: str) -> Any:
        """The reply's result; a reader silent past the timeout is killed (VddkReaderHung)."""
        limit = self.library.reply_timeout_s if timeout is None else timeout
        try:
            return fut.result(limit)
        except FutureTimeout:
            self.kill()
            raise VddkReaderHung(
                f"VDDK reader for {self.label} did not answer a {what} within {limit:.0f} s "
                "and was stopped"
            ) from None

    def wait_any(
        self, futures: list[Future[Any]], timeout: float, what: str,
        poll: Callable[[], None] = lambda: None,
    ) -> None:
        """Until one of `futures` is done, calling `poll` every POLL_S (it raises to stop the
        wait: a cancel); a reader silent past the timeout is killed."""
        deadline = time.monotonic() + timeout
        while True:
            poll()
            left = deadline - time.monotonic()
            if wait(futures, max(0.0, min(POLL_S, left)), return_when=FIRST_COMPLETED).done:
                return
            if left <= POLL_S:
                self.kill()
                raise VddkReaderHung(
                    f"VDDK reader for {self.label} did not answer a {what} within "
                    f"{timeout:.0f} s and was stopped"
                )

    def _receive(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._on_exit()
                return
            except Exception as exc:  # an unpicklable answer: treat the reader as broken
                log.debug("bad message from vddk reader %d: %s", self.proc.pid, exc)
                self.kill()
                self._on_exit()
                return
            if isinstance(message, LogRecord):
                reader_log.log(message.level, "%s", message.message)
                continue
            if isinstance(message, Reply):
                with self._lock:
                    fut = self._pending.pop(message.req_id, None)
                if fut is None:
                    continue
                if message.error is not None:
                    fut.set_exception(message.error)
                else:
                    fut.set_result(message.result)

    def _on_exit(self) -> None:
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        reason = (
            f"VDDK reader process {self.proc.pid} for {self.label} {describe_exit(code)}"
        )
        with self._lock:
            if self._dead is None:
                self._dead = reason
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(VddkReaderDied(reason))

    # ----- lifecycle -------------------------------------------------------------------------

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def finish(self, timeout: float = 60.0) -> None:
        """Wait for the process to exit after a Close; kill it if it does not."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("vddk reader %d did not exit after Close; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        try:
            self.conn.close()
        except OSError:
            pass
        self._receiver.join(10)
        try:
            self.shm.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes with the last one


__all__ = ["ReaderProcess", "VddkLibrary", "VddkReaderError", "describe_exit"]
