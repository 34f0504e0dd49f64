"""The reader process's sender: PUTs whose bodies are blocks of the reader's shared memory.

Why in the reader: the block is already here, read and hashed. When the worker sent every block
itself, each one crossed into the worker (a copy out of shared memory, a reply to unpickle, a
future, a thread hand-off) before its PUT; that per-block Python in the worker was most of the
CPU per GiB shipped. Here libcurl reads each body straight from the slot, and the worker handles
one reply per slot.

One thread drives every transfer through libcurl's multi interface: measured sending 1 GiB to a
fast local sink, 0.25-0.29 CPU-s against 0.49-0.61 for 32 threads with a blocking handle each
(the threads' GIL hand-offs and wake-ups cost more than the transfers).

What stays in the worker: the AWS credentials (each PUT arrives already signed, for that one
request), the throttle, the retries and the error mapping. This module only moves bytes and
reports how each transfer ended; a PUT that failed is retried by the worker like any other.
It imports pycurl and nothing of botocore: a reader starts per disk per run.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import pycurl

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.ebs.curl_options import HttpResult, prepare, was_connected
from snapship.vddk.protocol import SLOT_BYTES, Reply, SendReply, SendRequest, SendSetup

log = logging.getLogger("snapship.vddk.reader_process")

IDLE_WAIT_S = 1.0
"""Longest wait for socket activity when libcurl names no deadline of its own. A new request
wakes the wait at once (a byte on the wake pipe), so nothing is polled: a fixed 10 ms poll cost
the reader 15 ms of CPU per second while PUTs waited on a slow endpoint (32 handles walked 100
times a second), about 0.14 CPU-s per GiB at 100 MB/s."""


class ReplyChannel(Protocol):
    def send(self, message: object) -> None: ...


@dataclass
class _Request:
    req: SendRequest
    results: list[HttpResult | None]
    left: int


@dataclass
class _Transfer:
    request: _Request
    position: int
    lines: list[bytes]
    answer: io.BytesIO
    began: float = field(default_factory=time.perf_counter)


class Sender:
    """Sends the PUTs of SendRequests, at most `connections` at once, on one thread."""

    def __init__(self, view: memoryview, channel: ReplyChannel, setup: SendSetup) -> None:
        self._view = view
        self._channel = channel
        self._options = setup.options
        self._connections = max(1, setup.connections)
        self._requests: queue.SimpleQueue[SendRequest | None] = queue.SimpleQueue()
        self._broken: str | None = None
        self._unanswered: dict[int, _Request] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._guarded, name="vddk-send", daemon=True)
        self._thread.start()

    def submit(self, req: SendRequest) -> None:
        if self._broken is not None:
            self._channel.send(Reply(req.req_id, error=RuntimeError(self._broken)))
        else:
            self._put(req)

    def _put(self, req: SendRequest | None) -> None:
        self._requests.put(req)
        if self._wake_w < 0:
            return  # closed: no one to wake
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the sender is bound to look

    def _guarded(self) -> None:
        """A fault of the sender itself answers every request it holds, and every later one,
        with that fault: the worker sees a failed attempt at once, not a silent reader."""
        try:
            self._run()
        except Exception as exc:
            self._broken = f"the VDDK reader's sender failed: {type(exc).__name__}: {exc}"
            log.error("%s", self._broken)
            for request in list(self._unanswered.values()):
                self._channel.send(Reply(request.req.req_id, error=RuntimeError(self._broken)))
            while True:
                try:
                    req = self._requests.get_nowait()
                except queue.Empty:
                    return
                if req is not None:
                    self._channel.send(Reply(req.req_id, error=RuntimeError(self._broken)))

    def close(self) -> None:
        """Stop; transfers still under way are dropped unanswered. The worker closes a reader
        only once it waits for no reply (every send answered, or the upload abandoned)."""
        self._put(None)
        self._thread.join()
        wake_r, wake_w, self._wake_w = self._wake_r, self._wake_w, -1
        os.close(wake_r)
        os.close(wake_w)

    def _run(self) -> None:
        multi = pycurl.CurlMulti()
        idle: list[pycurl.Curl] = []
        handles = 0
        waiting: deque[tuple[_Request, int]] = deque()
        active: dict[pycurl.Curl, _Transfer] = {}
        stopping = False

        def finish(handle: pycurl.Curl, failure: tuple[int, str] | None) -> None:
            nonlocal handles
            t = active.pop(handle)
            multi.remove_handle(handle)
            seconds = time.perf_counter() - t.began
            if failure is not None:
                result = HttpResult(
                    0, curl_code=failure[0], curl_text=failure[1],
                    connected=was_connected(handle), seconds=seconds,
                )
                handle.close()  # its connection may be half-used: the next starts clean
                handles -= 1
            else:
                status = int(handle.getinfo(pycurl.RESPONSE_CODE))
                result = (
                    HttpResult(status, seconds=seconds) if 200 <= status < 300
                    else HttpResult(status, t.lines, t.answer.getvalue(), seconds=seconds)
                )
                idle.append(handle)
            self._settle(t.request, t.position, result)

        try:
            while True:
                while not stopping:
                    try:
                        req = self._requests.get(block=not (active or waiting))
                    except queue.Empty:
                        break
                    if req is None:
                        stopping = True
                        break
                    request = _Request(req, [None] * len(req.puts), len(req.puts))
                    if not req.puts:
                        self._channel.send(Reply(req.req_id, SendReply([])))
                        continue
                    self._unanswered[req.req_id] = request
                    waiting.extend((request, i) for i in range(len(req.puts)))
                if stopping:
                    return  # `finally` drops whatever is still under way
                while waiting and (idle or handles < self._connections):
                    if not idle:
                        idle.append(self._options.new_handle())
                        handles += 1
                    request, i = waiting.popleft()
                    put = request.req.puts[i]
                    if not 0 <= put.block < SLOT_BYTES // EBS_BLOCK_SIZE:
                        bad = HttpResult(0, curl_code=-1, curl_text=f"no block {put.block} here")
                        self._settle(request, i, bad)
                        continue
                    handle = idle.pop()
                    start = request.req.slot * SLOT_BYTES + put.block * EBS_BLOCK_SIZE
                    try:
                        lines, answer = prepare(
                            handle, "PUT", put.url, put.header_lines,
                            self._view[start : start + EBS_BLOCK_SIZE],
                        )
                    except (pycurl.error, ValueError, TypeError) as exc:  # e.g. a bad header
                        idle.append(handle)
                        text = f"could not set up the PUT: {type(exc).__name__}: {exc}"
                        self._settle(request, i, HttpResult(0, curl_code=-1, curl_text=text))
                        continue
                    active[handle] = _Transfer(request, i, lines, answer)
                    multi.add_handle(handle)
                if not active:
                    continue
                while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                    pass
                while True:
                    queued, ok, failed = multi.info_read()
                    for handle in ok:
                        finish(handle, None)
                    for handle, code, text in failed:
                        finish(handle, (int(code), str(text)))
                    if not queued:
                        break
                if active:
                    self._wait(multi)
        finally:
            for handle in list(active):
                multi.remove_handle(handle)
            for handle in [*active, *idle]:
                handle.close()
            multi.close()

    def _wait(self, multi: pycurl.CurlMulti) -> None:
        """Until a transfer's socket is ready, libcurl's own deadline passes, or a request
        arrives (the wake pipe)."""
        reads, writes, errors = multi.fdset()
        deadline_ms = multi.timeout()
        wait_s = IDLE_WAIT_S if deadline_ms < 0 else min(IDLE_WAIT_S, deadline_ms / 1000)
        ready, _, _ = select.select([*reads, self._wake_r], writes, errors, wait_s)
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _settle(self, request: _Request, position: int, result: HttpResult) -> None:
        request.results[position] = result
        request.left -= 1
        if request.left == 0:
            self._unanswered.pop(request.req.req_id, None)
            done = [r for r in request.results if r is not None]
            self._channel.send(Reply(request.req.req_id, SendReply(done)))
