"""Messages between the worker and a VDDK reader process (pickled over a socketpair).

Data never travels in these messages: a read names a slot of the shared memory both processes
map (a memfd), the reader fills it through ReadAsync, hashes each 512 KiB block there and answers
with the digests. A send names blocks of a slot and carries, for each, a PUT the worker has
already signed: the reader sends the block's bytes from the slot and answers with the outcome.
One dataclass per message, as for workflow and activity messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snapship.vddk.binding import DiskInfo

if TYPE_CHECKING:  # pickled across; the reader imports them when a sender is set up
    from snapship.ebs.curl_options import CurlOptions, HttpResult

SLOT_BYTES = 2 * 1024 * 1024
"""One shared-memory slot holds one read: at most 2 MiB (VDDK's largest read)."""


@dataclass(frozen=True)
class OpenRequest:
    """ConnectEx + Open of one snapshot disk (the password is needed until Disconnect)."""

    req_id: int
    server: str
    port: int
    thumbprint: str
    username: str
    password: str = field(repr=False)
    vm_moref: str
    snapshot_moref: str
    disk_path: str
    transport_modes: str


@dataclass(frozen=True)
class OpenReply:
    info: DiskInfo
    transport_mode: str


@dataclass(frozen=True)
class ReadRequest:
    """Read sectors into a slot; with `hash_blocks` > 0, zero-pad the slot to that many 512 KiB
    blocks and return each block's SHA-256."""

    req_id: int
    slot: int
    start_sector: int
    num_sectors: int
    hash_blocks: int = 0


@dataclass(frozen=True)
class ReadReply:
    digests: list[bytes]


@dataclass(frozen=True)
class QueryRequest:
    """QueryAllocatedBlocks over whole chunks (runs on the open/close thread)."""

    req_id: int
    start_sector: int
    num_sectors: int
    chunk_sectors: int


@dataclass(frozen=True)
class CloseRequest:
    """Wait for the handle's reads, Close, Disconnect, free the connect parameters, Exit."""

    req_id: int


@dataclass(frozen=True)
class Reply:
    """The answer to request `req_id`: a result or an error (VddkError or a one-line text)."""

    req_id: int
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class LogRecord:
    """A log line of the reader process, re-logged by the worker under its own logger."""

    level: int
    message: str


@dataclass(frozen=True)
class SendSetup:
    """Start the reader's sender: up to `connections` PUTs at once, handles set by `options`."""

    req_id: int
    options: CurlOptions
    connections: int


@dataclass(frozen=True)
class HttpPut:
    """One signed PUT whose body is 512 KiB block `block` of the request's slot."""

    block: int
    url: str
    header_lines: list[str] = field(repr=False)
    """Signed for this one request (SigV4 binds method, path, body hash and time); no key."""


@dataclass(frozen=True)
class SendRequest:
    """Send `puts`, each body a block of `slot`, all at once; one SendReply when all are done."""

    req_id: int
    slot: int
    puts: list[HttpPut]


@dataclass(frozen=True)
class SendReply:
    results: list[HttpResult]
    """In the order of the request's puts."""


@dataclass(frozen=True)
class Batch:
    """Several requests in one message: one write and one wake-up of the reader instead of one
    each (the worker's socket writes were about a tenth of its CPU per GiB shipped: each wakes
    the reader's receiver thread). Each request is answered on its own."""

    requests: list[ReadRequest | SendRequest]


Request = (
    OpenRequest | ReadRequest | QueryRequest | CloseRequest | SendSetup | SendRequest | Batch
)
