"""Disk data through VMware's VDDK (libvixDiskLib 7.0.3) via ctypes."""

from snapship.vddk.binding import DiskInfo, VddkError, VixDiskLib
from snapship.vddk.reader import DiskReader
from snapship.vddk.tarball import VddkTarballError, install_tarball, validate_tarball
from snapship.vddk.thumbprint import server_thumbprint

__all__ = [
    "DiskInfo",
    "DiskReader",
    "VddkError",
    "VddkTarballError",
    "VixDiskLib",
    "install_tarball",
    "server_thumbprint",
    "validate_tarball",
]
