"""VDDK's error codes and the exceptions a VDDK read raises, with what is worth retrying.

A VixError carries the code in its low 16 bits (`VIX_ERROR_CODE(err) = err & 0xFFFF`); the real
library sets bits above, so every comparison masks first. The transient set follows
../shared/reference/vddk-rules.md: network refusals and losses (14009-14011, 36) and a host in
maintenance (14014, 14015) usually succeed on a new connection; a thumbprint mismatch (VIX_E_FAIL
at Open, 30201), a missing snapshot or a permission error never do.

The reader process (snapship.vddk.server) runs the library; the worker sees its failures as these
exceptions, each with a one-line message a person understands.
"""

from __future__ import annotations

VIX_OK = 0
VIX_E_FAIL = 1
VIX_E_OUT_OF_MEMORY = 2
VIX_E_INVALID_ARG = 3
VIX_E_FILE_NOT_FOUND = 4
VIX_E_OBJECT_IS_BUSY = 5
VIX_E_NOT_SUPPORTED = 6
VIX_E_FILE_READ_ONLY = 11
VIX_E_FILE_ACCESS_ERROR = 13
VIX_E_HOST_CONNECTION_LOST = 36
VIX_E_HOST_USER_PERMISSIONS = 3014
VIX_E_SNAPSHOT_NOTFOUND = 13003
VIX_E_HOST_SERVER_NOT_FOUND = 14008
VIX_E_HOST_NETWORK_CONN_REFUSED = 14009
VIX_E_HOST_TCP_SOCKET_ERROR = 14010
VIX_E_HOST_TCP_CONN_LOST = 14011
VIX_E_HOST_SERVER_SHUTDOWN = 14014
VIX_E_HOST_SERVER_NOT_AVAILABLE = 14015
VIX_E_DISK_OUTOFRANGE = 16007
VIX_ASYNC = 25000
VIX_E_NET_HTTP_SSL_SECURITY = 30201

TRANSIENT_CODES = frozenset(
    {
        VIX_E_HOST_SERVER_NOT_FOUND,  # name resolution or a host rebooting (snapship.faults
        # gives ConnectEx failures a short attempt budget, so a real misconfiguration still ends)
        VIX_E_HOST_NETWORK_CONN_REFUSED,  # since 7.0.3.3 Open reports network errors as 14009
        VIX_E_HOST_TCP_SOCKET_ERROR,
        VIX_E_HOST_TCP_CONN_LOST,  # also what a read returns after the NFC read timeout
        VIX_E_HOST_SERVER_SHUTDOWN,
        VIX_E_HOST_SERVER_NOT_AVAILABLE,
        VIX_E_HOST_CONNECTION_LOST,
    }
)


def error_code(err: int) -> int:
    """The VixError's code: its low 16 bits."""
    return int(err) & 0xFFFF


class VddkError(Exception):
    """A VixDiskLib call failed: `code` (masked), VDDK's `text`, and the `call` that failed."""

    def __init__(self, code: int, text: str, call: str = "") -> None:
        self.raw_code = int(code)
        self.code = error_code(code)
        self.text = text
        self.call = call
        super().__init__(f"VDDK error {self.code}: {text}")

    @property
    def transient(self) -> bool:
        """Worth a new attempt on a new connection (network loss, host maintenance)."""
        return self.code in TRANSIENT_CODES

    def __reduce__(self) -> tuple[type[VddkError], tuple[int, str, str]]:
        # keeps code/text when the error crosses a process boundary (pickle)
        return (VddkError, (self.raw_code, self.text, self.call))


class VddkReaderError(Exception):
    """The VDDK reader process failed as a process (died, hung, would not start).

    Transient: the attempt fails, Temporal retries it, and it resumes from its checkpoint with a
    new reader; other VMs' readers are separate processes and carry on.
    """

    transient = True

    def __init__(self, message: str) -> None:
        super().__init__(message)


class VddkReaderDied(VddkReaderError):
    """The reader process exited (crash, SIGKILL, OOM) while it had work."""


class VddkReaderHung(VddkReaderError):
    """The reader process did not answer in time; it was killed."""
