"""Headless-browser check of the Temporal Web UI as snapship's user sees it.

Opens the Web UI link `snapship temporal start` prints in Chromium (Debian's `chromium`,
headless, driven over the DevTools protocol) and checks, as a person would by looking:
  1. the workflow list shows every source server's VM name, lifecycle and data replication
     state (after the README's one step: add the Snapship columns, which the Web UI keeps in the
     browser's local storage; this script applies that step the same way);
  2. a source server's history page shows decoded payloads (the codec endpoint reached the UI),
     not encrypted blobs;
  3. its "User Metadata" tab shows the summary and current details (VM name, lifecycle, data
     replication state), decoded.
Screenshots land in --out. Exit 0 when both hold; otherwise one line saying what is missing.

    .venv/bin/python scripts/webui_check.py --data-dir ~/.snapship [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapship import search_attributes as sa  # noqa: E402
from snapship.cli import console  # noqa: E402
from snapship.config import ClientConfig, default_data_dir  # noqa: E402

# The README's one step, as the Web UI stores it: its column choice per namespace and table.
COLUMNS = ["Status", sa.VM_NAME.name, sa.LIFECYCLE_STATE.name, sa.DATA_REPLICATION_STATE.name,
           sa.VCENTER_HOST.name, "Workflow ID", "Start"]
COLUMNS_KEY = "namespace-workflow-table-columns"
ENCRYPTED_MARK = "binary/encrypted"


class CheckFailed(Exception):
    """What a person would not see; one line."""


@dataclass
class Expected:
    workflow_id: str
    run_id: str
    vm_name: str
    lifecycle_state: str
    data_replication_state: str


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise CheckFailed("Chromium is not installed: `apt-get install chromium` (scripts/setup.sh)")


class Page:
    """The one DevTools-protocol session this check needs: navigate, read text, screenshot."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise CheckFailed(f"Chromium: {method}: {message['error'].get('message')}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def text(self) -> str:
        # The page, plus same-origin frames (the Web UI renders Markdown details in one).
        expression = (
            "[document.body.innerText, ...Array.from(document.querySelectorAll('iframe'))"
            ".map(f => { try { return f.contentDocument.body.innerText; } catch (e) "
            "{ return ''; } })].join('\\n')"
        )
        result = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True)
        return str(result.get("result", {}).get("value") or "")

    async def wait_for(self, wanted: list[str], unwanted: str, timeout: float) -> str:
        """Poll the page's text until every `wanted` string shows and `unwanted` does not."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.text()
            if all(w in text for w in wanted) and (not unwanted or unwanted not in text):
                return text
            await asyncio.sleep(0.5)
        missing = [w for w in wanted if w not in text]
        if missing:
            raise CheckFailed(f"not shown after {timeout:.0f} s: {', '.join(missing)}")
        raise CheckFailed(f"still shows {unwanted!r} after {timeout:.0f} s")

    async def screenshot(self, path: Path) -> None:
        result = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(result["data"]))


@contextlib.asynccontextmanager
async def browser(namespace: str) -> AsyncIterator[Page]:
    profile = Path(tempfile.mkdtemp(prefix="snapship-webui-"))
    proc = subprocess.Popen(
        [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1600,1000",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        port = await asyncio.to_thread(_devtools_port, profile, proc)
        targets = await asyncio.to_thread(_http_json, f"http://127.0.0.1:{port}/json/list")
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        async with websockets.connect(page_url, max_size=64 * 1024 * 1024) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            columns = json.dumps({namespace: [{"label": c} for c in COLUMNS]})
            await page.call(
                "Page.addScriptToEvaluateOnNewDocument",
                source=f"localStorage.setItem({json.dumps(COLUMNS_KEY)}, "
                       f"{json.dumps(columns)});",
            )
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Chromium writes its DevTools port to DevToolsActivePort in the profile once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
            last = err.strip().splitlines()[-1:] or ["no output"]
            raise CheckFailed(f"Chromium exited at start: {last[0]}")
        if marker.is_file():
            first = marker.read_text().splitlines()[:1]
            if first and first[0].isdigit():
                return int(first[0])
        time.sleep(0.2)
    raise CheckFailed(f"Chromium did not open its DevTools port within {timeout:.0f} s")


def _http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


async def expected_servers(cfg: ClientConfig) -> list[Expected]:
    from snapship.runtime import connect_client

    client = await connect_client(cfg)
    servers: list[Expected] = []
    async for execution in client.list_workflows(console.visibility_query(console.VIEW_ALL)):
        attrs = execution.typed_search_attributes
        servers.append(Expected(
            execution.id, execution.run_id, str(attrs.get(sa.VM_NAME) or ""),
            str(attrs.get(sa.LIFECYCLE_STATE) or ""),
            str(attrs.get(sa.DATA_REPLICATION_STATE) or ""),
        ))
    return servers


async def check(cfg: ClientConfig, ui: str, out: Path, timeout: float) -> list[str]:
    servers = await expected_servers(cfg)
    if not servers:
        raise CheckFailed("no source server in Temporal: run `snapship discover` first")
    out.mkdir(parents=True, exist_ok=True)
    namespace = cfg.temporal.namespace
    report: list[str] = []
    async with browser(namespace) as page:
        await page.call("Page.navigate", url=f"{ui}/namespaces/{namespace}/workflows")
        wanted = sorted({w for s in servers for w in
                         (s.vm_name, s.lifecycle_state, s.data_replication_state) if w})
        try:
            await page.wait_for(wanted, "", timeout)
        finally:
            await page.screenshot(out / "webui-list.png")
        report.append(f"list: {len(servers)} server(s) with name and states "
                      f"({out / 'webui-list.png'})")

        first = sorted(servers, key=lambda s: s.vm_name)[0]
        url = (f"{ui}/namespaces/{namespace}/workflows/{first.workflow_id}/{first.run_id}"
               "/history")
        await page.call("Page.navigate", url=url)
        try:
            # Decoded: the start input's field names appear and no payload is left encrypted.
            await page.wait_for([first.vm_name, "source_server_id"], ENCRYPTED_MARK, timeout)
        finally:
            await page.screenshot(out / "webui-history.png")
        report.append(f"history of {first.vm_name}: payloads decoded "
                      f"({out / 'webui-history.png'})")

        # The server's summary and current details, decoded (tab "User Metadata").
        await page.call("Page.navigate", url=url.removesuffix("/history") + "/user-metadata")
        try:
            await page.wait_for([first.vm_name, "Lifecycle: ", "Data replication: "],
                                ENCRYPTED_MARK, timeout)
        finally:
            await page.screenshot(out / "webui-metadata.png")
        report.append(f"summary and details of {first.vm_name} shown "
                      f"({out / 'webui-metadata.png'})")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None, help="client data directory")
    p.add_argument("--ui", default="", help="Web UI link (default: from the config)")
    p.add_argument("--out", type=Path, default=Path("bench/results/webui"),
                   help="where the screenshots go")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per page")
    args = p.parse_args(argv)
    cfg = ClientConfig.load((args.data_dir or default_data_dir()).expanduser())
    host = cfg.temporal.address.rpartition(":")[0] or "127.0.0.1"
    ui = (args.ui or f"http://{host}:{cfg.temporal.ui_port}").rstrip("/")
    try:
        for line in asyncio.run(check(cfg, ui, args.out, args.timeout)):
            print(line)
    except CheckFailed as exc:
        print(f"Web UI check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
