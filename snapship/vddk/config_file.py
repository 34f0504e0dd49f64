"""The VDDK configuration file (InitEx's configFile), written from the client configuration.

Without NFC timeouts an older host can hold a disk open forever and a stuck read can never be
cancelled; the async NFC buffers raise throughput when many disks are read from one host
(Forklift: 348 -> 505 MB/s for 10 VMs); tmpDirectory keeps VDDK's logs and temporary files in a
folder of ours. Values and sources: ../shared/reference/vddk-rules.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MAX_AIO_SESSION_BYTES = 16 * 1024 * 1024
"""Session memory (BufSizeIn64KB x 64 KiB x BufCount) above which Open fails."""


@dataclass(frozen=True)
class VddkSettings:
    """What goes into the config file; the defaults are VMware's and peers' recommendations."""

    accept_timeout_ms: int = 180_000
    request_timeout_ms: int = 180_000
    read_timeout_ms: int = 60_000
    write_timeout_ms: int = 600_000
    aio_buf_size_64k: int = 16
    aio_buf_count: int = 4
    log_level: int = 2
    """vixDiskLib.transport.LogLevel / nfc.LogLevel (0 quiet .. 6 trace); 2 keeps warnings."""

    def __post_init__(self) -> None:
        session = self.aio_buf_size_64k * 65536 * self.aio_buf_count
        if session > MAX_AIO_SESSION_BYTES:
            raise ValueError(
                f"VDDK async NFC session memory {session // 1024} KiB exceeds 16 MiB "
                "(BufSizeIn64KB x BufCount x 64 KiB); VDDK's Open would fail"
            )
        if self.read_timeout_ms <= 0:
            raise ValueError("the NFC read timeout must be positive (0 never cancels a read)")


def render(settings: VddkSettings, tmp_directory: Path) -> str:
    """The config file's text (key=value lines, as VDDK reads them)."""
    s = settings
    lines = [
        f"tmpDirectory={tmp_directory}",
        f"vixDiskLib.nfc.AcceptTimeoutMs={s.accept_timeout_ms}",
        f"vixDiskLib.nfc.RequestTimeoutMs={s.request_timeout_ms}",
        f"vixDiskLib.nfc.ReadTimeoutMs={s.read_timeout_ms}",
        f"vixDiskLib.nfc.WriteTimeoutMs={s.write_timeout_ms}",
        "vixDiskLib.nfcFssrvr.TimeoutMs=0",
        "vixDiskLib.nfcFssrvrWrite.TimeoutMs=0",
        f"vixDiskLib.nfcAio.Session.BufSizeIn64KB={s.aio_buf_size_64k}",
        f"vixDiskLib.nfcAio.Session.BufCount={s.aio_buf_count}",
        f"vixDiskLib.transport.LogLevel={s.log_level}",
        f"vixDiskLib.nfc.LogLevel={s.log_level}",
    ]
    return "\n".join(lines) + "\n"


def write_config(settings: VddkSettings, work_dir: Path) -> Path:
    """Write `work_dir/vixDiskLib.conf` (and `work_dir/tmp`) atomically; returns the file."""
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp_dir = work_dir / "tmp"
    tmp_dir.mkdir(exist_ok=True, mode=0o700)
    path = work_dir / "vixDiskLib.conf"
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(render(settings, tmp_dir))
    os.replace(staging, path)
    return path
