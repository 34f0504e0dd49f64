"""ctypes binding to VMware's libvixDiskLib (VDDK 7.0.3): exact struct layouts, typed calls.

Only the calls snapshot shipping needs are bound. Every call returning a VixError raises
`VddkError(code, text)` with VDDK's own message (GetErrorText/FreeErrorText). The library is a
`ctypes.CDLL`, so the GIL is released for the duration of each C call and several threads can
read at once (one disk handle per thread, as VDDK requires).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SECTOR_SIZE = 512
MAX_READ_BYTES = 2 * 1024 * 1024  # at most 2 MiB per VixDiskLib_Read call
MIN_CHUNK_SECTORS = 128  # VIXDISKLIB_MIN_CHUNK_SIZE
MAX_CHUNK_NUMBER = 512 * 1024  # VIXDISKLIB_MAX_CHUNK_NUMBER
FLAG_OPEN_READ_ONLY = 4
CRED_UID = 1
SPEC_VMX = 0
DEFAULT_TRANSPORT_MODES = "nbdssl:nbd"

VIX_OK = 0
VIX_E_FAIL = 1
VIX_E_INVALID_ARG = 3
VIX_E_FILE_NOT_FOUND = 4
VIX_E_NOT_SUPPORTED = 6
VIX_E_FILE_READ_ONLY = 11
VIX_E_FILE_ACCESS_ERROR = 13
VIX_E_HOST_USER_PERMISSIONS = 3014
VIX_E_HOST_SERVER_NOT_FOUND = 14008
VIX_E_SNAPSHOT_NOTFOUND = 13003
VIX_E_HOST_NETWORK_CONN_REFUSED = 14009
VIX_E_HOST_TCP_SOCKET_ERROR = 14010
VIX_E_HOST_TCP_CONN_LOST = 14011
VIX_E_DISK_OUTOFRANGE = 16007
VIX_E_NET_HTTP_SSL_SECURITY = 30201

TRANSIENT_VIX_ERRORS = frozenset(
    {
        VIX_E_HOST_SERVER_NOT_FOUND,
        VIX_E_HOST_NETWORK_CONN_REFUSED,
        VIX_E_HOST_TCP_SOCKET_ERROR,
        VIX_E_HOST_TCP_CONN_LOST,
    }
)
"""Errors a later attempt may not see (the network, a host rebooting); the rest are permanent."""

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


class VddkError(Exception):
    """A VixDiskLib call failed; `code` is the VixError, `text` VDDK's message for it."""

    def __init__(self, code: int, text: str, call: str = "") -> None:
        self.code = code
        self.text = text
        self.call = call
        where = f"{call}: " if call else ""
        super().__init__(f"{where}VDDK error {code}: {text}")

    @property
    def transient(self) -> bool:
        """Whether a later attempt may succeed (snapship.faults asks; the low 16 bits are the
        error code, the rest VDDK's extra information)."""
        return (self.code & 0xFFFF) in TRANSIENT_VIX_ERRORS

    def __reduce__(self) -> tuple[type[VddkError], tuple[int, str, str]]:
        # keeps code/text when the error crosses a process boundary (pickle)
        return (VddkError, (self.code, self.text, self.call))


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
    """One loaded libvixDiskLib; InitEx once per process and library, Exit on `exit()`."""

    _instances: dict[str, VixDiskLib] = {}
    _instances_lock = threading.Lock()

    def __init__(self, lib_path: Path, config_file: Path | None = None) -> None:
        self.lib_path = Path(lib_path)
        self.config_file = config_file
        self._lib = ctypes.CDLL(str(self.lib_path), mode=ctypes.RTLD_LOCAL)
        self._declare()
        # VDDK wants the directory holding lib64/ (the "distrib" directory) as libDir.
        lib_dir = self.lib_path.parent
        if lib_dir.name == "lib64":
            lib_dir = lib_dir.parent
        self._log_funcs = (LogFunc(self._on_log), LogFunc(self._on_warn), LogFunc(self._on_panic))
        self._libc = ctypes.CDLL(None)
        self._check(
            self._lib.VixDiskLib_InitEx(
                7,
                0,
                self._log_funcs[0],
                self._log_funcs[1],
                self._log_funcs[2],
                str(lib_dir).encode(),
                str(config_file).encode() if config_file else None,
            ),
            "VixDiskLib_InitEx",
        )
        self._exited = False

    @classmethod
    def load(cls, lib_path: Path, config_file: Path | None = None) -> VixDiskLib:
        """The process-wide instance for that library file (InitEx runs once)."""
        key = str(Path(lib_path).resolve())
        with cls._instances_lock:
            inst = cls._instances.get(key)
            if inst is None or inst._exited:
                inst = cls(Path(lib_path), config_file)
                cls._instances[key] = inst
            return inst

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
            self._libc.vsnprintf(buf, ctypes.c_size_t(len(buf)), ctypes.c_char_p(fmt),
                                 ctypes.c_void_p(args))
            return buf.value.decode(errors="replace").rstrip()
        except Exception:  # pragma: no cover - formatting must never break a VDDK call
            return fmt.decode(errors="replace").rstrip()

    def _on_log(self, fmt: bytes | None, args: int | None) -> None:
        log.debug("vddk: %s", self._format(fmt, args))

    def _on_warn(self, fmt: bytes | None, args: int | None) -> None:
        log.warning("vddk: %s", self._format(fmt, args))

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
        if code != VIX_OK:
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
    ) -> int:
        """VixDiskLib_ConnectEx to a VM's snapshot; returns the connection pointer."""
        params = VixDiskLibConnectParams()
        vmx = f"moref={vm_moref}".encode()
        strings = [vmx, server.encode(), thumbprint.encode(), username.encode(), password.encode()]
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
                    ctypes.byref(params),
                    b"\x01" if read_only else b"\x00",
                    snapshot_moref.encode(),
                    transport_modes.encode(),
                    ctypes.byref(conn),
                ),
                "VixDiskLib_ConnectEx",
            )
        finally:
            params.creds.uid.password = None
            del strings
        if not conn.value:
            raise VddkError(VIX_E_FAIL, "ConnectEx returned no connection", "VixDiskLib_ConnectEx")
        return conn.value

    def disconnect(self, conn: int) -> None:
        """VixDiskLib_Disconnect."""
        self._check(self._lib.VixDiskLib_Disconnect(conn), "VixDiskLib_Disconnect")

    def open(self, conn: int, path: str, flags: int = FLAG_OPEN_READ_ONLY) -> int:
        """VixDiskLib_Open (read-only unless told otherwise); returns the disk handle."""
        handle = ctypes.c_void_p()
        self._check(
            self._lib.VixDiskLib_Open(conn, path.encode(), flags, ctypes.byref(handle)),
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
        """VixDiskLib_Exit (once; later `load` calls initialise again)."""
        with VixDiskLib._instances_lock:
            if not self._exited:
                self._lib.VixDiskLib_Exit()
                self._exited = True
