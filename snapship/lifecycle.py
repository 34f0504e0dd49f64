"""The migration lifecycle after Ready for testing: which command is allowed when, and where it
leads (MGN's rules: StartTest, ChangeServerLifeCycleState, StartCutover, FinalizeCutover,
TerminateTargetInstances, DisconnectFromService, MarkAsArchived).

Pure: SourceServerWorkflow's Update validators call :func:`refusal` and its handlers
:func:`next_state`, so the rules are unit-tested without Temporal and read in one place. A refusal
is one sentence a person understands, naming the state the server is in and what would be needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from snapship.states import LifeCycleState as LCS


class Command(StrEnum):
    START_TEST = "start_test"
    MARK_READY_FOR_CUTOVER = "mark_ready_for_cutover"
    REVERT_TO_READY_FOR_TEST = "revert_to_ready_for_test"
    START_CUTOVER = "start_cutover"
    REVERT_CUTOVER = "revert_cutover"
    FINALIZE_CUTOVER = "finalize_cutover"
    TERMINATE_TARGET_INSTANCES = "terminate_target_instances"
    DISCONNECT = "disconnect"
    MARK_ARCHIVED = "mark_archived"
    UPDATE_LAUNCH_SETTINGS = "update_launch_settings"


_LABEL = {
    LCS.DISCOVERED: "not started",
    LCS.NOT_READY: "not ready (the first sync has not completed)",
    LCS.READY_FOR_TEST: "ready for testing",
    LCS.TESTING: "test in progress",
    LCS.READY_FOR_CUTOVER: "ready for cutover",
    LCS.CUTTING_OVER: "cutover in progress",
    LCS.CUTOVER: "cutover complete",
    LCS.DISCONNECTED: "disconnected",
    LCS.STOPPED: "stopped",
}

# Where each command may start from (MGN's rules).
ALLOWED_FROM: dict[Command, frozenset[LCS]] = {
    Command.START_TEST: frozenset({LCS.READY_FOR_TEST, LCS.TESTING, LCS.READY_FOR_CUTOVER}),
    Command.MARK_READY_FOR_CUTOVER: frozenset({LCS.TESTING}),
    Command.REVERT_TO_READY_FOR_TEST: frozenset({LCS.TESTING, LCS.READY_FOR_CUTOVER}),
    Command.START_CUTOVER: frozenset({LCS.READY_FOR_CUTOVER}),
    Command.REVERT_CUTOVER: frozenset({LCS.CUTTING_OVER}),
    Command.FINALIZE_CUTOVER: frozenset({LCS.CUTTING_OVER}),
    Command.TERMINATE_TARGET_INSTANCES: frozenset(set(LCS)),
    Command.DISCONNECT: frozenset(set(LCS) - {LCS.DISCONNECTED}),
    Command.MARK_ARCHIVED: frozenset({LCS.DISCONNECTED, LCS.CUTOVER}),
    Command.UPDATE_LAUNCH_SETTINGS: frozenset(set(LCS)),
}

_NEXT: dict[Command, LCS] = {
    Command.START_TEST: LCS.TESTING,
    Command.MARK_READY_FOR_CUTOVER: LCS.READY_FOR_CUTOVER,
    Command.REVERT_TO_READY_FOR_TEST: LCS.READY_FOR_TEST,
    Command.START_CUTOVER: LCS.CUTTING_OVER,
    Command.REVERT_CUTOVER: LCS.READY_FOR_CUTOVER,
    Command.FINALIZE_CUTOVER: LCS.CUTOVER,
    Command.DISCONNECT: LCS.DISCONNECTED,
}

_NEEDS_GROUP = {Command.START_TEST, Command.START_CUTOVER, Command.MARK_READY_FOR_CUTOVER}
_NOT_DURING_LAUNCH = {
    Command.START_TEST,
    Command.MARK_READY_FOR_CUTOVER,
    Command.REVERT_TO_READY_FOR_TEST,
    Command.START_CUTOVER,
    Command.REVERT_CUTOVER,
    Command.FINALIZE_CUTOVER,
    Command.TERMINATE_TARGET_INSTANCES,
    Command.DISCONNECT,
}


@dataclass(frozen=True)
class LifecycleView:
    """What the rules need to know about a server, taken from the workflow's state."""

    lifecycle_state: str
    archived: bool = False
    has_complete_group: bool = False
    job_in_progress: str = ""  # id of a launch/terminate job (or final sync) under way
    cutover_launched: bool = False  # the cutover instance of the current cutover is LAUNCHED
    target_instances: int = 0  # instances snapship launched for this server and still tracks
    vm_present: bool = True


def label(state: str) -> str:
    try:
        return _LABEL[LCS(state)]
    except ValueError:
        return state


def refusal(cmd: Command, view: LifecycleView) -> str | None:
    """Why `cmd` cannot run now, or None when it may."""
    if view.archived:
        return "the server is archived"
    try:
        state = LCS(view.lifecycle_state)
    except ValueError:
        return f"unknown lifecycle state {view.lifecycle_state!r}"
    if view.job_in_progress and cmd in _NOT_DURING_LAUNCH:
        return f"job {view.job_in_progress} is still in progress for this server; wait for it"
    if state not in ALLOWED_FROM[cmd]:
        if len(ALLOWED_FROM[cmd]) > 4:  # allowed almost everywhere: naming them all reads badly
            return f"the server is {label(state)}; {_human(cmd)} is not possible then"
        allowed = " or ".join(sorted(label(s) for s in ALLOWED_FROM[cmd]))
        return f"the server is {label(state)}; {_human(cmd)} needs it {allowed}"
    if cmd in _NEEDS_GROUP and not view.has_complete_group:
        return "the server has no complete snapshot group to launch from yet"
    if cmd is Command.START_CUTOVER and not view.vm_present:
        return "the VM is no longer in vCenter, so no final sync can run"
    if cmd is Command.FINALIZE_CUTOVER and not view.cutover_launched:
        return "the cutover instance has not launched; revert the cutover or launch it again"
    if cmd is Command.TERMINATE_TARGET_INSTANCES and view.target_instances == 0:
        return "snapship has launched no instance for this server that is still running"
    return None


def next_state(cmd: Command, current: str) -> str:
    """The lifecycle state after `cmd` succeeds (unchanged for commands that do not move it)."""
    target = _NEXT.get(cmd)
    return target.value if target is not None else current


def _human(cmd: Command) -> str:
    return cmd.value.replace("_", " ")
