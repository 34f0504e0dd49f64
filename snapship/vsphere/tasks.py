"""Waiting for vCenter tasks with a deadline, and reading why one failed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from snapship.vsphere.errors import TaskFailed, TaskTimedOut
from snapship.vsphere.props import retrieve_object
from snapship.vsphere.session import VcenterSession

TERMINAL = ("success", "error")


@dataclass(frozen=True)
class TaskOutcome:
    state: str  # queued / running / success / error
    result: Any
    error: Any  # vmodl.MethodFault or None


def task_state(session: VcenterSession, task_moref: str) -> TaskOutcome:
    props = retrieve_object(session, vim.Task, task_moref, ["info"])
    info = props["info"]
    return TaskOutcome(state=str(info.state), result=info.result, error=info.error)


def fault_text(fault: Any) -> str:
    """A readable one-liner for a MethodFault from a task or a call."""
    if fault is None:
        return "unknown error"
    name = type(fault).__name__.rsplit(".", 1)[-1]
    msg = getattr(fault, "msg", None) or ""
    if not msg and getattr(fault, "faultMessage", None):
        msg = "; ".join(m.message for m in fault.faultMessage if getattr(m, "message", None))
    return f"{name}: {msg}" if msg else name


def wait_for_task(
    session: VcenterSession,
    task: Any,
    what: str,
    timeout_s: float,
    poll_s: float = 0.1,
) -> Any:
    """Block until ``task`` ends; return its result, raise TaskFailed or TaskTimedOut.

    Polls with a growing interval (to 2 s) so quick tasks return quickly and slow ones do not
    flood vCenter. On timeout the task is left alone: the caller decides what to clean up.
    """
    moref = str(task._moId)
    deadline = time.monotonic() + timeout_s
    interval = poll_s
    while True:
        outcome = task_state(session, moref)
        if outcome.state == "success":
            return outcome.result
        if outcome.state == "error":
            raise TaskFailed(
                what, fault_text(outcome.error), type(outcome.error).__name__, outcome.error
            ) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TaskTimedOut(what, timeout_s, moref)
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, 2.0)
