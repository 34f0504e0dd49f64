"""Recorded workflow histories for the replay test.

Set SNAPSHIP_RECORD_HISTORIES=1 to (re)write them from the tests that produce them; commit the
files. A workflow change that breaks determinism then fails `test_replay.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"


async def record_history(handle: WorkflowHandle, name: str) -> None:
    if os.environ.get("SNAPSHIP_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(json.dumps(history.to_json_dict(), indent=1))
