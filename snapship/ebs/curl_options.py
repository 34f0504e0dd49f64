"""One libcurl PUT as both processes that send blocks make it: the worker (`curl_http`, for
retries and callers without a reader) and a VDDK reader process (`snapship.vddk.sender`, the
first attempt of every block, its body read by libcurl straight from the reader's shared
memory).

Why a module of its own: the reader must configure its handles exactly as the worker does
(endpoint, proxy, TLS, timeouts, the block-sized upload buffer), but must not import botocore
(a tenth of a CPU-second per reader start, paid per disk per run); everything here is plain
pycurl. The worker resolves botocore's choices (proxy from the environment, CA bundle) once and
hands the result over as a `CurlOptions`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import NamedTuple

import pycurl

# Headers libcurl would add on its own: "Expect: 100-continue" costs a round trip per block
# before the body, and none of them is signed.
DROPPED_HEADERS = ["Expect:", "Accept:"]
# libcurl copies a body through its upload buffer (64 KiB by default), one READFUNCTION call and
# one send() per fill. Sending 4,096 blocks from shared memory to a fast local sink through one
# multi handle, three alternating rounds: 0.22-0.24 CPU-s/GiB with 512 KiB, 0.23-0.28 with
# 128 KiB, 0.29-0.31 with 64 KiB. 128 KiB, because the buffer lives as long as its handle and a
# reader keeps a handle per PUT in flight: 50 VMs at 16 in flight hold 100 MiB of them, not 400.
UPLOAD_BUFFER_BYTES = 128 * 1024


@dataclass(frozen=True)
class CurlOptions:
    """How a handle reaches one endpoint; picklable, so a reader process gets the same."""

    connect_timeout_ms: int = 10_000
    timeout_ms: int = 70_000
    """The whole exchange, connect included: an upload never hangs."""
    proxy: str = field(default="", repr=False)
    """"" for none (libcurl must not read *_proxy itself); may hold a password, never shown."""
    verify: bool = True
    ca_path: str | None = None

    def new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)  # many threads: no SIGALRM for timeouts
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self.connect_timeout_ms)
        handle.setopt(pycurl.TIMEOUT_MS, self.timeout_ms)
        handle.setopt(pycurl.TCP_KEEPALIVE, 1)
        handle.setopt(pycurl.UPLOAD_BUFFERSIZE, UPLOAD_BUFFER_BYTES)
        handle.setopt(pycurl.PROXY, self.proxy)
        if not self.verify:
            handle.setopt(pycurl.SSL_VERIFYPEER, 0)
            handle.setopt(pycurl.SSL_VERIFYHOST, 0)
        elif self.ca_path:
            handle.setopt(pycurl.CAINFO, self.ca_path)
        return handle


class SignedPut(NamedTuple):
    """A PUT ready to send by whoever holds the body: signed, so it needs no credentials."""

    url: str
    header_lines: list[str]
    paced: bool = False
    """A throttle held it to a budget: send it now, not together with other blocks."""


@dataclass(frozen=True)
class HttpResult:
    """How one PUT ended. `status` 0: the transfer failed (`curl_code`, `curl_text`); the
    answer's headers and body travel only when it is not a success."""

    status: int
    header_lines: list[bytes] = field(default_factory=list)
    body: bytes = b""
    curl_code: int = 0
    curl_text: str = ""
    connected: bool = False
    seconds: float = 0.0

    @property
    def stored(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class CurlAnswer:
    """What came back: the status, the raw header lines (every answer's, 1xx included) and the
    body. A failed transfer raises `pycurl.error` instead."""

    status: int
    header_lines: list[bytes]
    body: bytes


class BodyReader:
    """libcurl's READFUNCTION over a buffer: pycurl copies each piece it asks for from the
    buffer (a memoryview of shared memory included) into its upload buffer, so the body is
    never copied into a Python bytes object; SEEKFUNCTION lets libcurl rewind it."""

    def __init__(self, body: bytes | memoryview) -> None:
        self.view = memoryview(body)
        self.pos = 0

    def read(self, size: int) -> memoryview:
        chunk = self.view[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk

    def seek(self, offset: int, origin: int) -> int:
        if origin != 0 or not 0 <= offset <= len(self.view):
            return pycurl.SEEKFUNC_CANTSEEK
        self.pos = offset
        return pycurl.SEEKFUNC_OK


def prepare(
    handle: pycurl.Curl,
    method: str,
    url: str,
    header_lines: list[str],
    body: bytes | memoryview,
) -> tuple[list[bytes], io.BytesIO]:
    """Set `handle` up for one request with `body`; returns where the answer's header lines
    and body will be collected."""
    lines: list[bytes] = []
    answer = io.BytesIO()
    reader = BodyReader(body)
    handle.setopt(pycurl.URL, url)
    handle.setopt(pycurl.UPLOAD, 1)
    handle.setopt(pycurl.CUSTOMREQUEST, method)
    handle.setopt(pycurl.INFILESIZE_LARGE, len(reader.view))
    handle.setopt(pycurl.READFUNCTION, reader.read)
    handle.setopt(pycurl.SEEKFUNCTION, reader.seek)
    handle.setopt(pycurl.HTTPHEADER, header_lines + DROPPED_HEADERS)
    handle.setopt(pycurl.HEADERFUNCTION, lines.append)
    handle.setopt(pycurl.WRITEFUNCTION, answer.write)
    return lines, answer


def perform(
    handle: pycurl.Curl,
    method: str,
    url: str,
    header_lines: list[str],
    body: bytes | memoryview,
) -> CurlAnswer:
    """One request on `handle` (kept alive for the next); raises pycurl.error on a transport
    fault, with the handle's connection left for the caller to discard."""
    lines, answer = prepare(handle, method, url, header_lines, body)
    handle.perform()
    return CurlAnswer(int(handle.getinfo(pycurl.RESPONSE_CODE)), lines, answer.getvalue())


def was_connected(handle: pycurl.Curl) -> bool:
    """Whether a timed-out transfer had connected (a read timeout) or not (a connect timeout)."""
    return float(handle.getinfo(pycurl.CONNECT_TIME)) > 0
