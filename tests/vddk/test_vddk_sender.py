"""A reader process sends the blocks a plan signs, straight from its shared memory: exactly those
blocks, byte for byte, each with its own headers; every other block comes back unsent; a
refused or failed PUT comes back with its answer and the block's bytes, for the worker to retry."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from vddk_support import Env, pattern

import snapship.vddk.reader as reader_module
from snapship.blocks import EBS_BLOCK_SIZE, ZERO_BLOCK_SHA256
from snapship.ebs.curl_options import CurlOptions, SignedPut
from snapship.vddk.protocol import ReadRequest, SendRequest

MIB = 1024 * 1024
BS = EBS_BLOCK_SIZE
CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Recorder:
    """A keep-alive HTTP/1.1 server that records each PUT and answers as `answer` says."""

    port: int = 0
    got: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """path -> (the X-Block header, SHA-256 of the body)"""
    answer: dict[str, bytes] = field(default_factory=dict)
    """path -> a raw answer instead of 201; b"" closes the connection without one."""
    stall: set[str] = field(default_factory=set)
    """paths answered never (the connection stays open)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        pending = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:])}
                length = int(headers["content-length"])
                while len(pending) < length:
                    pending += conn.recv(65536)
                body, pending = pending[:length], pending[length:]
                with self.lock:
                    self.got[path] = (headers.get("x-block", ""), hashlib.sha256(body).digest())
                    reply = self.answer.get(path, CREATED)
                if path in self.stall:
                    threading.Event().wait()
                if not reply:
                    return
                conn.sendall(reply)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = socket.create_server(("127.0.0.1", 0))
    rec = Recorder(port=server.getsockname()[1])
    threading.Thread(target=rec.serve, args=(server,), daemon=True).start()
    yield rec
    server.close()


def test_the_reader_sends_exactly_the_planned_blocks_byte_for_byte(
    env: Env, recorder: Recorder
) -> None:
    cap = 9 * MIB + 100 * 1024  # a partial tail block, shipped zero-padded
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    disk.write(0, pattern(0, cap, 5))
    disk.write(2 * MIB, bytes(BS))  # block 4 is all zeros
    point = env.publish(disk)
    want = [0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 18]
    skip = {3, 12}  # e.g. below a resume cursor
    planned: list[tuple[int, bool]] = []

    def plan(index: int, digest: bytes, is_zero: bool) -> SignedPut | None:
        planned.append((index, is_zero))
        if index in skip:
            return None
        return SignedPut(
            f"http://127.0.0.1:{recorder.port}/b/{index}",
            [f"X-Block: {index}", "Content-Type: application/octet-stream"],
        )

    with env.reader(point, send_window=8) as reader:
        blocks = list(reader.send_blocks(want, plan, CurlOptions()))
        content = disk.read(0, cap, point.file)

    assert [b.block_index for b in blocks] == want
    assert sorted(i for i, _ in planned) == want
    padded = content + bytes(-len(content) % BS)
    for b in blocks:
        expected = hashlib.sha256(padded[b.block_index * BS : (b.block_index + 1) * BS]).digest()
        assert b.digest == expected and b.planned and b.data == b""
        assert b.is_zero == (expected == ZERO_BLOCK_SHA256) == (b.block_index == 4)
        if b.block_index in skip:
            assert b.put is None
            assert f"/b/{b.block_index}" not in recorder.got
        else:
            assert b.put is not None and b.put.stored and b.put.status == 201
            assert recorder.got[f"/b/{b.block_index}"] == (str(b.block_index), expected)
    assert len(recorder.got) == len(want) - len(skip)


def test_a_refused_or_broken_put_comes_back_with_its_answer_and_the_blocks_bytes(
    env: Env, recorder: Recorder
) -> None:
    cap = 4 * MIB
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", cap, cbt_enabled=True)
    disk.write(0, pattern(0, cap, 9))
    point = env.publish(disk)
    body = b'{"message":"slow down"}'
    recorder.answer["/b/2"] = (
        b"HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: RequestThrottledException\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    recorder.answer["/b/5"] = b""  # the connection drops with no answer

    def plan(index: int, digest: bytes, is_zero: bool) -> SignedPut:
        return SignedPut(f"http://127.0.0.1:{recorder.port}/b/{index}", [f"X-Block: {index}"])

    with env.reader(point, send_window=4) as reader:
        blocks = {b.block_index: b for b in reader.send_blocks(range(8), plan, CurlOptions())}
        content = disk.read(0, cap, point.file)

    refused, broken = blocks[2].put, blocks[5].put
    assert refused.status == 400 and not refused.stored
    assert refused.body == body
    assert any(b"RequestThrottledException" in line for line in refused.header_lines)
    assert broken.status == 0 and broken.curl_code != 0 and broken.curl_text
    for index in (2, 5):
        assert blocks[index].data == content[index * BS : (index + 1) * BS]
    assert all(blocks[i].put.stored and blocks[i].data == b"" for i in (0, 1, 3, 4, 6, 7))


class Cancelled(Exception):
    pass


def test_a_cancel_while_a_send_stalls_ends_the_wait_at_once_and_stops_the_reader(
    env: Env, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "ABANDON_GRACE_S", 1.0)
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 4 * MIB, cbt_enabled=True)
    disk.write(0, pattern(0, 4 * MIB, 3))
    point = env.publish(disk)
    recorder.stall.add("/b/1")  # the endpoint takes the body and never answers

    def plan(index: int, digest: bytes, is_zero: bool) -> SignedPut:
        return SignedPut(f"http://127.0.0.1:{recorder.port}/b/{index}", [f"X-Block: {index}"])

    cancel_at = time.monotonic() + 0.5

    def stop() -> None:
        if time.monotonic() >= cancel_at:
            raise Cancelled()

    began = time.monotonic()
    with env.reader(point, send_window=8) as reader:
        pid = reader.reader_pid
        with pytest.raises(Cancelled):
            for b in reader.send_blocks(range(8), plan, CurlOptions(), stop):
                assert b.block_index == 0  # block 1 never ends, nor anything after it
        stopped = time.monotonic() - began
    assert stopped < 0.5 + 1.0 + 2.0  # the cancel, the grace, and slack: not the HTTP timeout
    assert time.monotonic() - began < 10
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("paced", [False, True])
def test_paced_puts_go_one_by_one_and_the_others_a_slot_at_a_time(
    env: Env, recorder: Recorder, paced: bool
) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 4 * MIB, cbt_enabled=True)
    disk.write(0, pattern(0, 4 * MIB, 4))
    point = env.publish(disk)

    def plan(index: int, digest: bytes, is_zero: bool) -> SignedPut:
        return SignedPut(f"http://127.0.0.1:{recorder.port}/b/{index}", [], paced)

    with env.reader(point, send_window=8) as reader:
        sizes: list[int] = []
        submit_all = reader._proc.submit_all

        def counting(requests: list[object]) -> object:
            sizes.extend(len(r.puts) for r in requests if isinstance(r, SendRequest))
            return submit_all(requests)

        reader._proc.submit_all = counting  # type: ignore[method-assign,assignment]
        assert all(b.put.stored for b in reader.send_blocks(range(8), plan, CurlOptions()))
    assert sizes == ([1] * 8 if paced else [4, 4])


def test_a_put_the_sender_cannot_set_up_fails_alone_and_the_reader_goes_on(
    env: Env, recorder: Recorder
) -> None:
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 4 * MIB, cbt_enabled=True)
    disk.write(0, pattern(0, 4 * MIB, 6))
    point = env.publish(disk)

    def plan(index: int, digest: bytes, is_zero: bool) -> SignedPut:
        header = "X-Block: \u00e9" if index == 1 else f"X-Block: {index}"  # not ASCII: refused
        return SignedPut(f"http://127.0.0.1:{recorder.port}/b/{index}", [header])

    with env.reader(point, send_window=8) as reader:
        blocks = {b.block_index: b for b in reader.send_blocks(range(8), plan, CurlOptions())}
        content = disk.read(0, 4 * MIB, point.file)
    bad = blocks[1].put
    assert bad.status == 0 and "could not set up the PUT" in bad.curl_text
    assert blocks[1].data == content[BS : 2 * BS]  # for the worker to send itself
    assert all(blocks[i].put.stored for i in range(8) if i != 1)
    assert "/b/1" not in recorder.got and len(recorder.got) == 7


def test_a_request_wakes_a_sender_whose_transfers_all_wait_on_the_endpoint(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender sleeps on its sockets, not on a short poll (that cost 15 ms of CPU a second
    while PUTs waited on a slow endpoint), so a new request must wake it: here a PUT that comes
    while the only other one waits forever is sent at once, not after the longest sleep."""
    from snapship.vddk import sender as sender_module
    from snapship.vddk.protocol import HttpPut, Reply, SendSetup

    monkeypatch.setattr(sender_module, "IDLE_WAIT_S", 120.0)
    recorder.stall.add("/b/stalled")
    replies: list[Reply] = []
    answered = threading.Event()

    class Channel:
        def send(self, message: object) -> None:
            assert isinstance(message, Reply)
            replies.append(message)
            answered.set()

    shm = memoryview(bytearray(4 * BS))
    options = CurlOptions(connect_timeout_ms=200_000, timeout_ms=300_000)  # no deadline wakes it
    sender = sender_module.Sender(shm, Channel(), SendSetup(1, options, 4))
    try:
        url = f"http://127.0.0.1:{recorder.port}/b"
        sender.submit(SendRequest(2, 0, [HttpPut(0, f"{url}/stalled", [])]))
        deadline = time.monotonic() + 30
        while "/b/stalled" not in recorder.got:  # its body is in: the sender now only waits
            assert time.monotonic() < deadline
            time.sleep(0.05)
        began = time.monotonic()
        sender.submit(SendRequest(3, 0, [HttpPut(1, f"{url}/next", [])]))
        assert answered.wait(60), "the second PUT waited out the sender's sleep"
        assert time.monotonic() - began < 60
    finally:
        sender.close()
    assert [r.req_id for r in replies] == [3]
    assert replies[0].result.results[0].status == 201


def test_a_passes_reads_and_sends_reach_the_reader_in_one_message(
    env: Env, recorder: Recorder
) -> None:
    """Each message wakes the reader (and costs the worker a write): a slot's sends go with the
    next read, so there are fewer messages than requests, and the blocks still land."""
    disk = env.store.create_disk("ds1", "vm-1", "vm-1", 16 * MIB, cbt_enabled=True)
    disk.write(0, pattern(0, 16 * MIB, 8))
    point = env.publish(disk)

    def plan(index: int, digest: bytes, is_zero: bool) -> SignedPut:
        return SignedPut(f"http://127.0.0.1:{recorder.port}/b/{index}", [])

    with env.reader(point, send_window=8) as reader:
        messages: list[int] = []
        submit_all = reader._proc.submit_all

        def counting(requests: list[object]) -> object:
            if all(isinstance(r, ReadRequest | SendRequest) for r in requests):
                messages.append(len(requests))
            return submit_all(requests)

        reader._proc.submit_all = counting  # type: ignore[method-assign,assignment]
        assert all(b.put.stored for b in reader.send_blocks(range(32), plan, CurlOptions()))
    assert sum(messages) == 8 + 8  # a read and a send per 2 MiB slot
    assert len(messages) < sum(messages) and max(messages) > 1
    assert len(recorder.got) == 32
