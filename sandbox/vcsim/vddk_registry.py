"""What the stub libvixDiskLib reads from $STATE/vddk: endpoint, users, snapshots, faults.

The simulator writes these files; the stub (another process, C) re-reads them on every
ConnectEx/Open, so each file is replaced atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_MOREF = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class StubRegistry:
    """Writes the stub's view of the simulator (see docs/DESIGN.md, "Sandbox disk format")."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "vddk"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def set_endpoint(self, host: str, port: int, thumbprint_sha1: str) -> None:
        """The /sdk endpoint ConnectEx must name, with its certificate's SHA-1 thumbprint."""
        if any(c.isspace() for c in host) or not host:
            raise ValueError(f"bad host {host!r}")
        with self._lock:
            _atomic_write(self.root / "endpoint", f"{host} {int(port)} {thumbprint_sha1.upper()}\n")

    def set_users(self, users: dict[str, str]) -> None:
        """The accepted user/password pairs (file mode 0600)."""
        lines = []
        for user, password in users.items():
            if "\t" in user or "\n" in user or "\n" in password:
                raise ValueError("user names and passwords may not hold tabs or newlines")
            lines.append(f"{user}\t{password}\n")
        with self._lock:
            _atomic_write(self.root / "users", "".join(lines), 0o600)

    def _snapshot_path(self, vm_moref: str, snapshot_moref: str) -> Path:
        for ref in (vm_moref, snapshot_moref):
            if not _MOREF.match(ref):
                raise ValueError(f"bad managed object reference {ref!r}")
        return self.root / "snapshots" / vm_moref / snapshot_moref

    def publish_snapshot(self, vm_moref: str, snapshot_moref: str, files: list[str]) -> None:
        """Make a snapshot's frozen disks openable through the stub (one path a line)."""
        text = "".join(f"{f}\n" for f in files)
        with self._lock:
            _atomic_write(self._snapshot_path(vm_moref, snapshot_moref), text)

    def withdraw_snapshot(self, vm_moref: str, snapshot_moref: str) -> None:
        """The snapshot is gone: ConnectEx and Open for it fail from now on."""
        with self._lock:
            try:
                self._snapshot_path(vm_moref, snapshot_moref).unlink()
            except FileNotFoundError:
                pass

    def set_faults(self, **faults: int) -> None:
        """Replace the fault settings (read_error_every, read_latency_us, read_mib_per_s,
        read_stall, connect_error); none clears them."""
        for key in faults:
            if not re.match(r"^[a-z_]+$", key):
                raise ValueError(f"bad fault name {key!r}")
        with self._lock:
            path = self.root / "faults"
            active = {k: int(v) for k, v in faults.items() if int(v)}
            if not active:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                return
            _atomic_write(path, "".join(f"{k}={v}\n" for k, v in active.items()))
