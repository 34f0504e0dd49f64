"""README "Run the sandbox by hand": its lines work as written.

The section's two shell blocks are taken from README.md and run by bash in a fresh directory
(ports moved with the block's own variables so it cannot collide with anything else on the
machine), bounded in time. They must install against the simulator and local AWS, find the
appliance VM, start Temporal and the worker, discover, and list the discovered servers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Run the sandbox by hand"
TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start)
    section = text[start:end if end != -1 else None]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_readme_sandbox_block_runs_verbatim(tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) == 2, "the section has the run block and the stop block"
    # Harness only: whatever happens, nothing is left running (the stop block is the README's).
    guard = ("trap 'rc=$?; snapship temporal stop >/dev/null 2>&1; "
             "kill $(jobs -p) 2>/dev/null || true; exit $rc' EXIT\n")
    script = guard + "set -e\n" + blocks[0] + blocks[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHIP_")}
    env.update(
        SANDBOX_DIR=str(tmp_path / "sandbox"),
        VC_PORT=str(_free_port()), AWS_PORT=str(_free_port()),
        TEMPORAL_PORT=str(_free_port()), UI_PORT=str(_free_port()),
        CODEC_PORT=str(_free_port()),
    )
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(
            f"the README block did not finish in {TIMEOUT_S} s:\n{out[-3000:]}"
        ) from None
    assert proc.returncode == 0, out[-3000:]
    assert "vCenter simulator at https://localhost:" in out  # the pieces print what comes next
    assert "export SNAPSHIP_STUB_VDDK_STATE=" in out and "--aws-access-key-id" in out
    assert "this client runs on VM snapship-appliance" in out
    assert "Discovered " in out and "client VM skipped 1" in out
    listing = out[out.rindex("Discovered "):]
    assert "web-01" in listing or "web" in listing
    assert "snapship-appliance" not in listing.split("client VM skipped")[1]
