"""Replays recorded histories through today's workflow code: non-determinism fails the suite."""

from __future__ import annotations

import json

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from snapship.codec import data_converter
from tests.e2e.harness import TEST_KEYRING
from tests.workflows.history_files import HISTORIES
from workflows.launch_job import LaunchJobWorkflow
from workflows.permits import PermitCoordinatorWorkflow
from workflows.source_server import SourceServerWorkflow


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, f"no recorded histories in {HISTORIES}"
    histories = [WorkflowHistory.from_json(f.stem, json.loads(f.read_text())) for f in files]
    # Sandbox histories are encrypted with the tests' fixed key; plain ones pass through.
    replayer = Replayer(
        workflows=[SourceServerWorkflow, PermitCoordinatorWorkflow, LaunchJobWorkflow],
        data_converter=data_converter(TEST_KEYRING)
    )
    for history in histories:
        # Raises on any non-determinism, naming the history.
        await replayer.replay_workflow(history)
