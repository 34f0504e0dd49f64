"""`snapship temporal start|status|stop`: the embedded dev server with its SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from snapship.cli import app

ROOT = Path(__file__).resolve().parents[2]


def snapship(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the command as its own process, as a user does (the server outlives it)."""
    return subprocess.run(
        [sys.executable, "-m", "starter", *argv], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_status_stop_keeps_database_under_data_dir(tmp_path: Path) -> None:
    port, ui = free_port(), free_port()
    flags = ["--data-dir", str(tmp_path), "--port", str(port), "--ui-port", str(ui)]
    try:
        started = snapship("temporal", "start", *flags)
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        assert f"Web UI: http://127.0.0.1:{ui}" in started.stdout
        assert (tmp_path / "temporal" / "temporal.db").exists()
        status = snapship("temporal", "status", *flags)
        assert status.stdout.startswith("running")
        # A second start on the same data dir finds the running server instead of failing.
        assert snapship("temporal", "start", *flags).returncode == 0
    finally:
        stopped = snapship("temporal", "stop", *flags)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    assert snapship("temporal", "status", *flags).stdout.strip() == "stopped"


def test_start_refuses_a_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = app.main(["temporal", "start", "--data-dir", str(tmp_path), "--port", str(port),
                         "--ui-port", str(free_port())])
    assert code == 1
    assert "already in use" in capsys.readouterr().err
