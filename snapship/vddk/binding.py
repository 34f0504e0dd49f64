"""ctypes binding to VMware's libvixDiskLib (VDDK 7.0.3): exact struct layouts, typed calls.

Only the calls snapshot shipping needs are bound. Every call returning a VixError raises
`VddkError(code, text)` with VDDK's own message (GetErrorText/FreeErrorText), the code masked to
its low 16 bits. The worker never loads this module's library: only the reader process
(snapship.vddk.server) does, in a process started with LD_LIBRARY_PATH naming the tarball's lib64,
and it keeps the real library's rules (InitEx once in the main thread; connect/open/close/
disconnect/QueryAllocatedBlocks on that thread; every read call of a handle on one thread).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapship.vddk.errors import TRANSIENT_CODES as TRANSIENT_VIX_ERRORS
from snapship.vddk.errors import VIX_ASYNC, VIX_E_FAIL, VIX_OK, VddkError, error_code

__all__ = ["TRANSIENT_VIX_ERRORS", "VddkError", "VixDiskLib"]

log = logging.getLogger(__name__)

SECTOR_SIZE = 512
MAX_READ_BYTES = 2 * 1024 * 1024  # at most 2 MiB per VixDiskLib_Read call
MIN_CHUNK_SECTORS = 128  # VIXDISKLIB_MIN_CHUNK_SIZE
MAX_CHUNK_NUMBER = 512 * 1024  # VIXDISKLIB_MAX_CHUNK_NUMBER
FLAG_OPEN_READ_ONLY = 4
CRED_UID = 1
SPEC_VMX = 0
DEFAULT_TRANSPORT_MODES = "nbdssl:nbd"

PHONE_HOME_NOISE = ("VDDK_PhoneHome", "Get CEIP status failed")
"""VDDK 7 logs these as warnings on every start when it cannot reach VMware: debug, not warning."""


VixError = ctypes.c_uint64
SectorType = ctypes.c_uint64


class VixDiskLibVStorageObjectSpec(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_char_p),
        ("datastoreMoRef", ctypes.c_char_p),
        ("ssId", ctypes.c_char_p),
    ]


class VixDiskLibUidPasswdCreds(ctypes.Structure):
    _fields_ = [("userName", ctypes.c_char_p), ("password", ctypes.c_char_p)]


class VixDiskLibSessionIdCreds(ctypes.Structure):
    _fields_ = [
        ("cookie", ctypes.c_char_p),
        ("userName", ctypes.c_char_p),
        ("key", ctypes.c_char_p),
    ]


class VixDiskLibCreds(ctypes.Union):
    _fields_ = [
        ("uid", VixDiskLibUidPasswdCreds),
        ("sessionId", VixDiskLibSessionIdCreds),
        ("ticketId", ctypes.c_void_p),
    ]


class VixDiskLibSpec(ctypes.Union):
    _fields_ = [("vStorageObjSpec", VixDiskLibVStorageObjectSpec)]


class VixDiskLibConnectParams(ctypes.Structure):
    """VDDK 6.7+ layout: the vStorage-object spec and specType come after the reserved fields."""

    _fields_ = [
        ("vmxSpec", ctypes.c_char_p),
        ("serverName", ctypes.c_char_p),
        ("thumbPrint", ctypes.c_char_p),
        ("privateUse", ctypes.c_long),
        ("credType", ctypes.c_int),
        ("creds", VixDiskLibCreds),
        ("port", ctypes.c_uint32),
        ("nfcHostPort", ctypes.c_uint32),
        ("vimApiVer", ctypes.c_char_p),
        ("reserved", ctypes.c_char * 8),
        ("reserved2", ctypes.c_void_p),
        ("spec", VixDiskLibSpec),
        ("specType", ctypes.c_int),
    ]

    def __repr__(self) -> str:  # never show the password
        return f"VixDiskLibConnectParams(vmxSpec={self.vmxSpec!r}, serverName={self.serverName!r})"


class VixDiskLibGeometry(ctypes.Structure):
    _fields_ = [
        ("cylinders", ctypes.c_uint32),
        ("heads", ctypes.c_uint32),
        ("sectors", ctypes.c_uint32),
    ]


class VixDiskLibInfo(ctypes.Structure):
    _fields_ = [
        ("biosGeo", VixDiskLibGeometry),
        ("physGeo", VixDiskLibGeometry),
        ("capacity", SectorType),
        ("adapterType", ctypes.c_int),
        ("numLinks", ctypes.c_int),
        ("parentFileNameHint", ctypes.c_char_p),
        ("uuid", ctypes.c_char_p),
    ]


class VixDiskLibBlock(ctypes.Structure):
    _fields_ = [("offset", SectorType), ("length", SectorType)]


class VixDiskLibBlockList(ctypes.Structure):
    _fields_ = [("numBlocks", ctypes.c_uint32), ("blocks", VixDiskLibBlock * 1)]


# void (*)(const char *fmt, va_list args); on x86-64 a va_list argument is passed as a pointer.
LogFunc = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
# void (*)(void *cbData, VixError result): ReadAsync's completion, called from a VDDK thread.
CompletionFunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p, VixError)


@dataclass
class Connection:
    """A ConnectEx connection with the parameters VDDK reads until Disconnect.

    VMware's way: AllocateConnectParams, fill it, keep it and the strings it points to alive,
    FreeConnectParams after Disconnect. `strings` holds the bytes objects the fields point into.
    """

    pointer: int
    params: Any = field(repr=False)
    strings: list[bytes] = field(repr=False)


@dataclass(frozen=True)
class DiskInfo:
    """What VixDiskLib_GetInfo says about an open disk."""

    capacity_sectors: int
    adapter_type: int
    num_links: int
    parent_file_name_hint: str | None
    uuid: str | None

    @property
    def capacity(self) -> int:
        """Capacity in bytes."""
        return self.capacity_sectors * SECTOR_SIZE


class VixDiskLib:
    """The loaded libvixDiskLib of a reader process: InitEx in __init__, Exit on `exit()`.

    Create it once, in the process's main thread, before any other thread touches VDDK.
    """

    def __init__(self, lib_path: Path, config_file: Path | None = None) -> None:
        self.lib_path = Path(lib_path)
        self.config_file = config_file
        self._lib = ctypes.CDLL(str(self.lib_path), mode=ctypes.RTLD_LOCAL)
        self._declare()
        # VDDK wants the directory holding lib64/ (the "distrib" directory) as libDir.
        lib_dir = self.lib_path.parent
        if lib_dir.name == "lib64":
            lib_dir = lib_dir.parent
        self.last_warning = ""
        self._log_funcs = (LogFunc(self._on_log), LogFunc(self._on_warn), LogFunc(self._on_panic))
        # Looked up now, not in the first log callback: a dlsym there frees the message of the
        # dlerror() a warning may be carrying in its va_list (the stub's "cannot load" warning
        # then read as garbage).
        self._vsnprintf = ctypes.CDLL(None).vsnprintf
        self._vsnprintf.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
        ]
        self._vsnprintf.restype = ctypes.c_int
        code = self._lib.VixDiskLib_InitEx(
            7,
            0,
            self._log_funcs[0],
            self._log_funcs[1],
            self._log_funcs[2],
            str(lib_dir).encode(),
            str(config_file).encode() if config_file else None,
        )
        if error_code(code) != VIX_OK:
            # VDDK says why only in its log (a missing companion library, a bad config file)
            said = self.last_warning.removeprefix("VixDiskLib: ")
            why = f" ({said})" if said else ""
            raise VddkError(int(code), self.error_text(int(code)) + why, "VixDiskLib_InitEx")
        self._exited = False
        self.last_warning = ""

    # ----- declarations ------------------------------------------------------------------

    def _declare(self) -> None:
        lib = self._lib
        p = ctypes.c_void_p
        decl: dict[str, tuple[Any, list[Any]]] = {
            "VixDiskLib_InitEx": (
                VixError,
                [ctypes.c_uint32, ctypes.c_uint32, LogFunc, LogFunc, LogFunc,
                 ctypes.c_char_p, ctypes.c_char_p],
            ),
            "VixDiskLib_Exit": (None, []),
            "VixDiskLib_ConnectEx": (
                VixError,
                [ctypes.POINTER(VixDiskLibConnectParams), ctypes.c_char, ctypes.c_char_p,
                 ctypes.c_char_p, ctypes.POINTER(p)],
            ),
            "VixDiskLib_Disconnect": (VixError, [p]),
            "VixDiskLib_Open": (VixError, [p, ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(p)]),
            "VixDiskLib_Close": (VixError, [p]),
            "VixDiskLib_GetInfo": (VixError, [p, ctypes.POINTER(ctypes.POINTER(VixDiskLibInfo))]),
            "VixDiskLib_FreeInfo": (None, [ctypes.POINTER(VixDiskLibInfo)]),
            "VixDiskLib_Read": (VixError, [p, SectorType, SectorType, p]),
            "VixDiskLib_ReadAsync": (
                VixError, [p, SectorType, SectorType, p, CompletionFunc, p],
            ),
            "VixDiskLib_Wait": (VixError, [p]),
            "VixDiskLib_AllocateConnectParams": (ctypes.POINTER(VixDiskLibConnectParams), []),
            "VixDiskLib_FreeConnectParams": (None, [ctypes.POINTER(VixDiskLibConnectParams)]),
            "VixDiskLib_QueryAllocatedBlocks": (
                VixError,
                [p, SectorType, SectorType, SectorType,
                 ctypes.POINTER(ctypes.POINTER(VixDiskLibBlockList))],
            ),
            "VixDiskLib_FreeBlockList": (VixError, [ctypes.POINTER(VixDiskLibBlockList)]),
            # returns char* that must go back through FreeErrorText: keep it a raw pointer
            "VixDiskLib_GetErrorText": (p, [VixError, ctypes.c_char_p]),
            "VixDiskLib_FreeErrorText": (None, [p]),
            "VixDiskLib_ListTransportModes": (ctypes.c_char_p, []),
            "VixDiskLib_GetTransportMode": (ctypes.c_char_p, [p]),
        }
        for name, (restype, argtypes) in decl.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes

    # ----- log callbacks (va_list formatted by libc's vsnprintf) -------------------------

    def _format(self, fmt: bytes | None, args: int | None) -> str:
        if not fmt:
            return ""
        buf = ctypes.create_string_buffer(2048)
        try:
            self._vsnprintf(buf, len(buf), fmt, args)
            return buf.value.decode(errors="replace").rstrip()
        except Exception:  # pragma: no cover - formatting must never break a VDDK call
            return fmt.decode(errors="replace").rstrip()

    def _on_log(self, fmt: bytes | None, args: int | None) -> None:
        log.debug("vddk: %s", self._format(fmt, args))

    def _on_warn(self, fmt: bytes | None, args: int | None) -> None:
        text = self._format(fmt, args)
        if any(noise in text for noise in PHONE_HOME_NOISE):
            log.debug("vddk: %s", text)
        else:
            log.warning("vddk: %s", text)
        self.last_warning = text

    def _on_panic(self, fmt: bytes | None, args: int | None) -> None:
        log.critical("vddk panic: %s", self._format(fmt, args))

    # ----- errors --------------------------------------------------------------------------

    def error_text(self, code: int) -> str:
        """VDDK's own message for an error code."""
        ptr = self._lib.VixDiskLib_GetErrorText(code, None)
        if not ptr:
            return f"error {code}"
        try:
            return (ctypes.string_at(ptr) or b"").decode(errors="replace")
        finally:
            self._lib.VixDiskLib_FreeErrorText(ptr)

    def _check(self, code: int, call: str) -> None:
        if error_code(code) != VIX_OK:
            raise VddkError(int(code), self.error_text(int(code)), call)

    # ----- calls ---------------------------------------------------------------------------

    def list_transport_modes(self) -> str:
        """The transport modes this library supports, e.g. "file:san:hotadd:nbdssl:nbd"."""
        value = self._lib.VixDiskLib_ListTransportModes()
        return value.decode() if value else ""

    def connect(
        self,
        *,
        server: str,
        port: int,
        thumbprint: str,
        username: str,
        password: str,
        vm_moref: str,
        snapshot_moref: str,
        transport_modes: str = DEFAULT_TRANSPORT_MODES,
        read_only: bool = True,
    ) -> Connection:
        """VixDiskLib_ConnectEx to a VM's snapshot with parameters from AllocateConnectParams.

        The parameters (and their strings) stay alive in the returned Connection until
        `disconnect`, which frees them after Disconnect: VDDK reads them again at Open and
        Disconnect.
        """
        ptr = self._lib.VixDiskLib_AllocateConnectParams()
        if not ptr:
            raise VddkError(VIX_E_FAIL, "AllocateConnectParams failed", "VixDiskLib_ConnectEx")
        params = ptr.contents
        strings = [f"moref={vm_moref}".encode(), server.encode(), thumbprint.encode(),
                   username.encode(), password.encode()]
        params.vmxSpec, params.serverName, params.thumbPrint = strings[0], strings[1], strings[2]
        params.credType = CRED_UID
        params.creds.uid.userName = strings[3]
        params.creds.uid.password = strings[4]
        params.port = port
        params.specType = SPEC_VMX
        conn = ctypes.c_void_p()
        try:
            self._check(
                self._lib.VixDiskLib_ConnectEx(
                    ptr,
                    b"\x01" if read_only else b"\x00",
                    snapshot_moref.encode(),
                    transport_modes.encode(),
                    ctypes.byref(conn),
                ),
                "VixDiskLib_ConnectEx",
            )
            if not conn.value:
                raise VddkError(
                    VIX_E_FAIL, "ConnectEx returned no connection", "VixDiskLib_ConnectEx"
                )
        except BaseException:
            self._lib.VixDiskLib_FreeConnectParams(ptr)
            raise
        return Connection(conn.value, ptr, strings)

    def disconnect(self, conn: Connection) -> None:
        """VixDiskLib_Disconnect, then FreeConnectParams.

        If Disconnect fails the connection may still be alive and reading its parameters, so
        they are not freed (a small leak in a process that exits soon, never a use after free).
        """
        self._check(self._lib.VixDiskLib_Disconnect(conn.pointer), "VixDiskLib_Disconnect")
        self._lib.VixDiskLib_FreeConnectParams(conn.params)
        conn.strings.clear()

    def open(self, conn: Connection, path: str, flags: int = FLAG_OPEN_READ_ONLY) -> int:
        """VixDiskLib_Open (read-only unless told otherwise); returns the disk handle."""
        handle = ctypes.c_void_p()
        self._check(
            self._lib.VixDiskLib_Open(conn.pointer, path.encode(), flags, ctypes.byref(handle)),
            "VixDiskLib_Open",
        )
        if not handle.value:
            raise VddkError(VIX_E_FAIL, "Open returned no handle", "VixDiskLib_Open")
        return handle.value

    def close(self, handle: int) -> None:
        """VixDiskLib_Close."""
        self._check(self._lib.VixDiskLib_Close(handle), "VixDiskLib_Close")

    def transport_mode(self, handle: int) -> str:
        """The transport mode VDDK chose for this handle."""
        value = self._lib.VixDiskLib_GetTransportMode(handle)
        return value.decode() if value else ""

    def get_info(self, handle: int) -> DiskInfo:
        """VixDiskLib_GetInfo, copied out, then FreeInfo."""
        ptr = ctypes.POINTER(VixDiskLibInfo)()
        self._check(self._lib.VixDiskLib_GetInfo(handle, ctypes.byref(ptr)), "VixDiskLib_GetInfo")
        try:
            info = ptr.contents
            return DiskInfo(
                capacity_sectors=int(info.capacity),
                adapter_type=int(info.adapterType),
                num_links=int(info.numLinks),
                parent_file_name_hint=(
                    info.parentFileNameHint.decode() if info.parentFileNameHint else None
                ),
                uuid=info.uuid.decode() if info.uuid else None,
            )
        finally:
            self._lib.VixDiskLib_FreeInfo(ptr)

    def read_into(self, handle: int, start_sector: int, buffer: Any, offset: int = 0,
                  num_sectors: int | None = None) -> None:
        """VixDiskLib_Read of num_sectors into a writable buffer at byte `offset`.

        Reads longer than 2 MiB are split; the GIL is released during each C call.
        """
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise ValueError("buffer must be writable")
        if num_sectors is None:
            num_sectors = (len(view) - offset) // SECTOR_SIZE
        if offset < 0 or offset + num_sectors * SECTOR_SIZE > len(view):
            raise ValueError("buffer too small for the requested sectors")
        base = ctypes.addressof((ctypes.c_char * len(view)).from_buffer(view)) if len(view) else 0
        per_call = MAX_READ_BYTES // SECTOR_SIZE
        done = 0
        while done < num_sectors:
            n = min(per_call, num_sectors - done)
            self._check(
                self._lib.VixDiskLib_Read(
                    handle, start_sector + done, n, base + offset + done * SECTOR_SIZE
                ),
                "VixDiskLib_Read",
            )
            done += n

    def read(self, handle: int, start_sector: int, num_sectors: int) -> bytes:
        """VixDiskLib_Read into a fresh buffer."""
        buf = bytearray(num_sectors * SECTOR_SIZE)
        self.read_into(handle, start_sector, buf, 0, num_sectors)
        return bytes(buf)

    def read_async(self, handle: int, start_sector: int, num_sectors: int, address: int,
                   callback: Any, cb_data: int) -> None:
        """VixDiskLib_ReadAsync of at most 2 MiB into memory at `address`.

        VIX_ASYNC means queued; `callback` (a CompletionFunc the caller keeps alive until it ran)
        is called from a VDDK thread with `cb_data` and the result.
        """
        if num_sectors * SECTOR_SIZE > MAX_READ_BYTES:
            raise ValueError("ReadAsync reads at most 2 MiB")
        code = self._lib.VixDiskLib_ReadAsync(
            handle, start_sector, num_sectors, address, callback, cb_data
        )
        if error_code(code) != VIX_ASYNC:
            self._check(code, "VixDiskLib_ReadAsync")

    def wait(self, handle: int) -> None:
        """VixDiskLib_Wait: every ReadAsync of this handle has completed."""
        self._check(self._lib.VixDiskLib_Wait(handle), "VixDiskLib_Wait")

    def query_allocated_blocks(
        self, handle: int, start_sector: int, num_sectors: int, chunk_sectors: int
    ) -> list[tuple[int, int]]:
        """VixDiskLib_QueryAllocatedBlocks: (offset, length) pairs in sectors."""
        ptr = ctypes.POINTER(VixDiskLibBlockList)()
        self._check(
            self._lib.VixDiskLib_QueryAllocatedBlocks(
                handle, start_sector, num_sectors, chunk_sectors, ctypes.byref(ptr)
            ),
            "VixDiskLib_QueryAllocatedBlocks",
        )
        try:
            count = int(ptr.contents.numBlocks)
            blocks = ctypes.cast(
                ctypes.byref(ptr.contents, VixDiskLibBlockList.blocks.offset),
                ctypes.POINTER(VixDiskLibBlock * max(count, 1)),
            ).contents
            return [(int(blocks[i].offset), int(blocks[i].length)) for i in range(count)]
        finally:
            self._lib.VixDiskLib_FreeBlockList(ptr)

    def exit(self) -> None:
        """VixDiskLib_Exit (once; the process may not initialise again)."""
        if not self._exited:
            self._lib.VixDiskLib_Exit()
            self._exited = True
