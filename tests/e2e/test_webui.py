"""The Temporal Web UI reads like MGN's list, with decoded histories, in the README's start order.

README order: `snapship temporal start` first (nothing serves the codec yet), the worker after.
The dev server must still have been given the worker's codec endpoint, and the headless-browser
check (scripts/webui_check.py, Chromium from Debian) must find each VM's name and states on the
list page the printed link opens, and decoded payloads on a history page.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from activities.discovery import signal_with_start
from snapship.cli import app
from snapship.cli.worker_check import live_pollers
from snapship.codec import KeyRing
from snapship.config import ClientConfig
from snapship.messages import DiscoveredServer, Eligibility, VmFacts
from snapship.runtime import connect_client
from snapship.secrets import CODEC_KEY, SecretStore

ROOT = Path(__file__).resolve().parents[2]
VCENTER_UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(name: str) -> DiscoveredServer:
    return DiscoveredServer(
        facts=VmFacts(moref=f"vm-{name}", name=name, instance_uuid=str(uuid.uuid4())),
        eligibility=Eligibility(eligible=True),
        discovered_at="2026-12-01T00:00:00+00:00",
    )


async def _wait_worker(cfg: ClientConfig, worker: subprocess.Popen[bytes]) -> None:
    client = await connect_client(cfg)
    deadline = time.monotonic() + 120
    while not await live_pollers(client, cfg.temporal.control_task_queue):
        assert worker.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, "the worker never polled"
        await asyncio.sleep(0.5)
    for name in ("web-01", "db-01"):
        await signal_with_start(client, cfg, VCENTER_UUID, _server(name))


def test_webui_lists_names_and_states_and_decodes_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("chromium is missing: run scripts/setup.sh (it installs Debian's chromium)")
    home = tmp_path / "home"
    cfg = ClientConfig(data_dir=str(home), client_id="webui")
    cfg.vcenter.host = "vc-webui.example.test"
    cfg.vcenter.instance_uuid = VCENTER_UUID
    cfg.temporal.address = f"127.0.0.1:{_free_port()}"
    cfg.temporal.ui_port = _free_port()
    cfg.telemetry.codec_port = _free_port()
    cfg.save()
    SecretStore(cfg.secrets_path).set(CODEC_KEY, KeyRing.generate().to_secret())

    assert app.main(["temporal", "start", "--data-dir", str(home)]) == 0
    worker: subprocess.Popen[bytes] | None = None
    try:
        out = capsys.readouterr().out
        link = f"http://127.0.0.1:{cfg.temporal.ui_port}"
        assert f"Web UI: {link}" in out
        assert f"codec http://127.0.0.1:{cfg.telemetry.codec_port}" in out  # nothing served it yet

        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--data-dir", str(home), "--no-metrics"],
            cwd=ROOT, stdout=(tmp_path / "worker.log").open("ab"), stderr=subprocess.STDOUT,
        )
        asyncio.run(_wait_worker(cfg, worker))

        # As a user runs it: the script, in its own process, against the printed link.
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts/webui_check.py"), "--data-dir", str(home),
             "--ui", link, "--out", str(tmp_path / "shots"), "--timeout", "90"],
            cwd=ROOT, capture_output=True, text=True, timeout=400,
        )
        out, err = done.stdout, done.stderr
        assert done.returncode == 0, err
        assert "list: 2 server(s)" in out and "payloads decoded" in out
        assert "summary and details of db-01 shown" in out
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        app.main(["temporal", "stop", "--data-dir", str(home)])
