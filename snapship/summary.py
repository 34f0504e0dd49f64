"""The human summary of a source server in Temporal's user metadata, so the Web UI reads like MGN.

Why: the Web UI lists workflows by id, and a source server's id is two UUIDs. Temporal shows a
workflow's *summary* (fixed at start: `static_summary`) and *current details* (set by the
workflow at any time: `workflow.set_current_details`) without any configuration, so they carry
what MGN's source-server list shows: VM name, vCenter, lifecycle, data replication state and
the last error. Plain text, one fact per line: the details render as Markdown.

Pure functions: the workflow imports this module.
"""

from __future__ import annotations

from snapship.states import LIFECYCLE_STEPS


def lifecycle_label(state: str) -> str:
    """MGN's lifecycle step ("Ready for testing") for a LifeCycleState value."""
    for label, states in LIFECYCLE_STEPS:
        if state in {s.value for s in states}:
            return label
    return state.replace("_", " ").capitalize() if state else ""


def replication_label(state: str) -> str:
    """"INITIAL_SYNC" -> "Initial sync"."""
    return state.replace("_", " ").capitalize() if state else ""


def server_summary(vm_name: str, vcenter_host: str) -> str:
    """The one-line summary given at start (it never changes; the details do)."""
    return f"{vm_name} (vCenter {vcenter_host}), snapshot shipping"


def server_details(
    vm_name: str,
    vcenter_host: str,
    lifecycle_state: str,
    data_replication_state: str,
    last_error: str = "",
    retrying: str = "",
) -> str:
    """The current details: the MGN list's columns, one per line (and, while an activity of the
    run waits for its next attempt, that retry line)."""
    lines = [
        f"**{vm_name}** on vCenter {vcenter_host}",
        f"Lifecycle: {lifecycle_label(lifecycle_state)} ({lifecycle_state})",
        f"Data replication: {replication_label(data_replication_state)} "
        f"({data_replication_state})",
    ]
    if retrying:
        lines.append(f"Now: {' '.join(retrying.split())}")
    if last_error:
        lines.append(f"Last error: {' '.join(last_error.split())}")
    return "\n\n".join(lines)
