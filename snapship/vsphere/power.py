"""Stopping the source VM for a cutover's final sync, and starting it again on a revert.

A guest shutdown through VMware Tools lets the guest flush its caches, so the final snapshot holds
a clean file system; without running Tools the only way is a power-off. The result says what was
done, so a revert powers the VM back on only when snapship was the one that stopped it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyVmomi import vim, vmodl

from snapship.vsphere.props import retrieve_object
from snapship.vsphere.session import VcenterSession
from snapship.vsphere.tasks import wait_for_task

POWER_PATHS = ("runtime.powerState", "guest.toolsRunningStatus")
SHUTDOWN = "shutdown"  # guest shutdown through VMware Tools, then power-off after a grace time
POWER_OFF = "power-off"
LEAVE_RUNNING = "leave-running"
STOP_MODES = (SHUTDOWN, POWER_OFF, LEAVE_RUNNING)


@dataclass(frozen=True)
class StopOutcome:
    was_powered_on: bool
    action: str  # "guest-shutdown", "power-off", "already-off", "left-running"
    powered_off_by_us: bool


def power_state(session: VcenterSession, vm_moref: str) -> tuple[str, str]:
    """(runtime.powerState, guest.toolsRunningStatus)."""
    props = retrieve_object(session, vim.VirtualMachine, vm_moref, POWER_PATHS)
    return str(props.get("runtime.powerState", "")), str(props.get("guest.toolsRunningStatus", ""))


def _power_off(session: VcenterSession, vm_moref: str, timeout_s: float) -> None:
    vm = vim.VirtualMachine(vm_moref, session.stub)
    try:
        task = vm.PowerOffVM_Task()
    except vim.fault.InvalidPowerState:
        return
    wait_for_task(session, task, f"Power off {vm_moref}", timeout_s)


def stop_source(
    session: VcenterSession,
    vm_moref: str,
    mode: str = SHUTDOWN,
    grace_s: float = 300.0,
    timeout_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
    beat: Callable[[], None] = lambda: None,
) -> StopOutcome:
    """Stop the guest as `mode` says; idempotent (an already stopped VM is left as it is)."""
    if mode not in STOP_MODES:
        raise ValueError(f"unknown stop mode {mode!r}; use one of {', '.join(STOP_MODES)}")
    state, tools = power_state(session, vm_moref)
    if state != "poweredOn":
        return StopOutcome(False, "already-off", False)
    if mode == LEAVE_RUNNING:
        return StopOutcome(True, "left-running", False)
    if mode == SHUTDOWN and tools == "guestToolsRunning":
        vm = vim.VirtualMachine(vm_moref, session.stub)
        try:
            vm.ShutdownGuest()
        except (vim.fault.ToolsUnavailable, vim.fault.InvalidState):
            pass  # Tools stopped meanwhile: fall through to a power-off
        else:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                if power_state(session, vm_moref)[0] == "poweredOff":
                    return StopOutcome(True, "guest-shutdown", True)
                beat()
                sleep(1.0)
    _power_off(session, vm_moref, timeout_s)
    return StopOutcome(True, "power-off", True)


def power_on(session: VcenterSession, vm_moref: str, timeout_s: float = 600.0) -> bool:
    """Power the VM on; False when it was already on."""
    vm = vim.VirtualMachine(vm_moref, session.stub)
    try:
        task = vm.PowerOnVM_Task()
    except (vim.fault.InvalidPowerState, vmodl.fault.NotSupported):
        return False
    try:
        wait_for_task(session, task, f"Power on {vm_moref}", timeout_s)
    except Exception as exc:  # the task's fault: already on is not an error
        if "Powered on" in str(exc):
            return False
        raise
    return True
