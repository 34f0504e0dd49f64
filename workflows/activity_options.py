"""Timeouts of every activity the workflows schedule, in one table.

Why heartbeats everywhere: Temporal learns that a worker died only from a missed heartbeat or
from the end of the start-to-close timeout. Every activity here therefore heartbeats (the sync
ones from a helper thread, `activities/heartbeat.py`) and has a heartbeat timeout, so a killed
worker's attempt is retried by another worker within about that timeout plus the first retry
interval, whatever its start-to-close. Start-to-close stays as the upper bound of a healthy
attempt (a vCenter task queue, a large snapshot sealing). The table is also in docs/DESIGN.md.

This module is deterministic workflow code: it imports only pure modules.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

CONTROL_HEARTBEAT = timedelta(seconds=10)
"""Control activities beat every 3 s from a helper thread: three chances per timeout."""
SHIP_HEARTBEAT = timedelta(seconds=15)
"""The ship coroutine beats every 3 s (before its share query and progress signal, which may
each wait a few seconds) and with every checkpoint: five chances per timeout. A killed worker's
ship is what a VM waits out longest after a crash, so this stays as short as that allows."""
DISCOVERY_HEARTBEAT = timedelta(seconds=40)
"""Discovery beats every 10 s from its event loop while the inventory is read in a thread."""


class Timeouts(TypedDict):
    """Keyword arguments of `workflow.execute_activity` / `start_activity`."""

    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta


def _t(start_to_close: timedelta, heartbeat: timedelta = CONTROL_HEARTBEAT) -> Timeouts:
    return Timeouts(start_to_close_timeout=start_to_close, heartbeat_timeout=heartbeat)


TIMEOUTS: dict[str, Timeouts] = {
    "snapship.preflight": _t(timedelta(minutes=10)),
    "snapship.ensure_cbt": _t(timedelta(minutes=10)),
    "snapship.create_snapshot": _t(timedelta(minutes=30)),
    "snapship.ship": _t(timedelta(hours=24), SHIP_HEARTBEAT),
    "snapship.location_check": _t(timedelta(minutes=10)),
    "snapship.complete_group": _t(timedelta(hours=2)),
    "snapship.discard_snapshots": _t(timedelta(minutes=10)),
    "snapship.remove_snapshot": _t(timedelta(hours=1)),
    # Waits for a create task an interrupted attempt left running (up to its 30 min), then removes.
    "snapship.remove_own_snapshots": _t(timedelta(hours=1)),
    "snapship.apply_retention": _t(timedelta(minutes=30)),
    "discover_source_servers": _t(timedelta(hours=2), DISCOVERY_HEARTBEAT),
    # One signal-with-start RPC; one describe per holder (it beats after each).
    "snapship.request_permit": _t(timedelta(seconds=30)),
    "snapship.permit_holders_alive": _t(timedelta(minutes=2)),
    # Launch jobs and the lifecycle (issue 14). A launch waits for its instance to run; a retried
    # attempt reuses the image name and ClientToken, so it never launches a second instance.
    "snapship.launch_server": _t(timedelta(minutes=30)),
    "snapship.terminate_instances": _t(timedelta(minutes=10)),
    "snapship.validate_launch_settings": _t(timedelta(minutes=2)),
    # A guest shutdown may take its grace time (5 min) before the power-off.
    "snapship.stop_source": _t(timedelta(minutes=20)),
    "snapship.start_source": _t(timedelta(minutes=20)),
}


def timeouts(activity_name: str) -> Timeouts:
    """The row for `activity_name` (a KeyError for an activity missing from the table)."""
    return TIMEOUTS[activity_name]
