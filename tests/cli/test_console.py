"""The console (`snapship servers`, `servers show`, `replicate`) against real workflows.

Runs the lead's SourceServerWorkflow on the embedded Temporal server; servers are created the
way discovery creates them (signal-with-start), and the CLI is driven through `main(argv)`.
No replication activity is registered, so started servers stay in their first run (INITIATING),
which is all the console needs.
"""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.discovery import signal_with_start
from snapship.cli import app
from snapship.config import ClientConfig
from snapship.messages import DiscoveredServer, Eligibility, VmFacts
from workflows.source_server import SourceServerWorkflow

VCENTER_UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@dataclass
class Console:
    client: Client
    cfg: ClientConfig
    data_dir: Path


def server(
    name: str, uuid_: str, eligible: bool = True, tags: dict[str, str] | None = None
) -> DiscoveredServer:
    reasons = [] if eligible else ["The VM has VMware snapshots (before-patch); delete them."]
    return DiscoveredServer(
        facts=VmFacts(moref=f"vm-{name}", name=name, instance_uuid=uuid_),
        eligibility=Eligibility(eligible=eligible, reasons=reasons),
        discovered_at="2026-11-25T00:00:00+00:00",
        tags=tags or {},
    )


@pytest_asyncio.fixture
async def console(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Console]:
    client = temporal_env.client
    cfg = ClientConfig(data_dir=str(tmp_path), client_id="test")
    # A unique vCenter host keeps this test's servers apart from other tests' on the server.
    cfg.vcenter.host = f"vc-{uuid.uuid4().hex[:8]}.example.test"
    cfg.vcenter.instance_uuid = VCENTER_UUID
    cfg.temporal.control_task_queue = f"console-{uuid.uuid4().hex[:8]}"
    cfg.save()

    async def fake_connect(_cfg: ClientConfig) -> Client:
        return client

    monkeypatch.setattr(app, "connect", fake_connect)
    async with Worker(client, task_queue=cfg.temporal.control_task_queue,
                      workflows=[SourceServerWorkflow]):
        for s in (
            server("web-01", "11111111-0000-0000-0000-000000000001", tags={"team": "web"}),
            server("web-02", "11111111-0000-0000-0000-000000000002", tags={"team": "web"}),
            server("db-01", "11111111-0000-0000-0000-000000000003", eligible=False),
        ):
            await signal_with_start(client, cfg, VCENTER_UUID, s)
        yield Console(client, cfg, tmp_path)
        for execution in [e async for e in client.list_workflows(
            f'SnapshipVcenterHost="{cfg.vcenter.host}" AND ExecutionStatus="Running"'
        )]:
            await client.get_workflow_handle(execution.id).terminate("test over")
    # Evicted workflow coroutines are finalized here, at a known point: left to a random later
    # GC they run their `finally` blocks in the middle of whatever the process does next (seen
    # to break CPython 3.11's ast.parse in pytest's assertion rewriting).
    gc.collect()


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    import asyncio

    # main() calls asyncio.run; run it in a thread so it gets its own event loop.
    code = await asyncio.to_thread(app.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def wait_listed(c: Console, count: int) -> None:
    """Visibility is eventually consistent: wait until the servers are listed."""
    import asyncio

    for _ in range(100):
        found = [e async for e in c.client.list_workflows(
            f'SnapshipVcenterHost="{c.cfg.vcenter.host}" AND ExecutionStatus="Running"'
        )]
        if len(found) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("servers never became visible")


async def test_discovered_view_lists_servers_with_mgn_columns(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    await wait_listed(console, 3)
    d = str(console.data_dir)
    code, out, _ = await run_cli(capsys, "servers", "--data-dir", d, "--discovered")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "REPLICATION"]
    body = [line for line in lines[1:] if line.strip() and not line.startswith("3 source")]
    names = [line.split()[0] for line in body]
    assert names == ["db-01", "web-01", "web-02"]
    for line in body:
        assert "Snapshot shipping" in line
        assert "Not started" in line
        assert "STOPPED" in line
    db = next(line for line in body if line.startswith("db-01"))
    assert "Not eligible: The VM has VMware snapshots" in db

    # The default view is the active servers: none yet.
    code, out, _ = await run_cli(capsys, "servers", "--data-dir", d)
    assert code == 0 and "No active source servers" in out

    # Filters: name glob and tag.
    code, out, _ = await run_cli(capsys, "servers", "--data-dir", d, "--all", "--name", "web-0?",
                                 "--json")
    assert code == 0
    assert sorted(r["name"] for r in json.loads(out)) == ["web-01", "web-02"]
    code, out, _ = await run_cli(capsys, "servers", "--data-dir", d, "--all", "--tag",
                                 "team=web", "--json")
    rows = json.loads(out)
    assert sorted(r["name"] for r in rows) == ["web-01", "web-02"]
    assert all(r["replication_type"] == "SNAPSHOT_SHIPPING" for r in rows)
    assert all(r["lifecycle_step"] == "Not started" for r in rows)


async def test_replicate_reports_each_server_and_refusals(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    await wait_listed(console, 3)
    d = str(console.data_dir)
    # Stopping servers that do not replicate: every one refused, with the validator's reason.
    code, out, _ = await run_cli(capsys, "replicate", "stop", "web-*", "--data-dir", d)
    assert code == 1
    refused = [line for line in out.splitlines() if " refused " in line]
    assert [line.split()[0] for line in refused] == ["web-01", "web-02"]
    assert all("replication is not running" in line for line in refused)
    assert "0 accepted, 2 refused" in out

    # Start every discovered server: eligible ones start, the ineligible one is refused.
    code, out, _ = await run_cli(capsys, "replicate", "start", "--all-discovered",
                                 "--interval", "3600", "--data-dir", d)
    assert code == app.EXIT_PARTIAL
    by_name = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "ok" in by_name["web-01"].split() and "3600s" in by_name["web-01"]
    assert "ok" in by_name["web-02"].split()
    assert "refused" in by_name["db-01"].split()
    assert "not eligible" in by_name["db-01"]
    assert "2 accepted, 1 refused" in out

    # A second start of the same server is refused by its workflow, not silently repeated.
    code, out, _ = await run_cli(capsys, "replicate", "start", "web-01", "--data-dir", d)
    assert code == 1 and "already running" in out

    # Pause then pause again.
    code, out, _ = await run_cli(capsys, "replicate", "pause", "web-01", "--data-dir", d)
    assert code == 0 and "paused" in out
    code, out, _ = await run_cli(capsys, "replicate", "pause", "web-01", "--data-dir", d)
    assert code == 1 and "already paused" in out

    # The active view now holds the two replicating servers.
    for _ in range(50):
        code, out, _ = await run_cli(capsys, "servers", "--data-dir", d, "--json")
        names = sorted(r["name"] for r in json.loads(out))
        if names == ["web-01", "web-02"]:
            break
    assert names == ["web-01", "web-02"]

    # --watch redraws until the selection is ready for testing; nothing replicates here, so it
    # gives up at the timeout with a non-zero exit.
    code, out, err = await run_cli(capsys, "replicate", "resume", "web-01", "--watch",
                                   "--timeout", "1", "--data-dir", d)
    assert code == 1 and "Timed out waiting" in err
    assert "0/1 ready for testing" in out and "web-01" in out.split("ready for testing")[1]

    # Unknown names are reported and make the command fail.
    code, out, err = await run_cli(capsys, "replicate", "resume", "nope-*", "--data-dir", d)
    assert code == 1 and "nope-*: no source server matches" in err


async def test_show_renders_migration_dashboard(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    await wait_listed(console, 3)
    d = str(console.data_dir)
    code, out, _ = await run_cli(capsys, "servers", "show", "db-01", "--data-dir", d)
    assert code == 0
    assert "Replication type: Snapshot shipping" in out
    assert "[>] Not started" in out and "[ ] Ready for testing" in out
    assert "NOT eligible" in out and "VMware snapshots" in out
    code, _, err = await run_cli(capsys, "servers", "show", "missing-vm", "--data-dir", d)
    assert code == 1 and "No source server is named 'missing-vm'" in err


async def test_large_lists_skip_live_status_unless_full(
    console: Console, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapship.cli import console as console_mod

    await wait_listed(console, 3)
    monkeypatch.setattr(console_mod, "LIST_STATUS_LIMIT", 2)
    d = str(console.data_dir)
    code, out, _ = await run_cli(capsys, "servers", "--all", "--data-dir", d)
    assert code == 0 and "More than 2 servers" in out
    assert "Not eligible" not in out  # no status was queried
    code, out, _ = await run_cli(capsys, "servers", "--all", "--full", "--data-dir", d)
    assert code == 0 and "More than" not in out and "Not eligible" in out


async def test_console_without_install_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run_cli(capsys, "servers", "--data-dir", str(tmp_path / "none"))
    assert code == 1 and "snapship install" in err


async def test_state_filter_takes_mgn_labels_and_says_why_empty(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    await wait_listed(console, 3)
    d = str(console.data_dir)
    for state in ("Not started", "DISCOVERED", "discovered", "stopped"):
        code, out, _ = await run_cli(capsys, "servers", "--all", "--state", state,
                                     "--data-dir", d, "--json")
        assert code == 0 and len(json.loads(out)) == 3, state
    code, out, _ = await run_cli(capsys, "servers", "--all", "--state", "Ready for testing",
                                 "--data-dir", d)
    assert code == 0
    assert "No source server matches the filters (--state 'Ready for testing')" in out
    assert "3 server(s) in this view" in out
    code, _, err = await run_cli(capsys, "servers", "--all", "--state", "bogus", "--data-dir", d)
    assert code == 1 and "is no lifecycle or data replication state" in err
    assert "'Ready for testing'" in err
