"""Launch-side activities: thin adapters from Temporal to snapship.launch and snapship.vsphere.

Every one is idempotent under retry and on another worker: the launch derives its image name and
ClientToken from job + server, termination of a gone instance is a no-op, stopping an already
stopped VM and starting an already running one change nothing. Faults a retry cannot fix (a
deleted subnet, a refused parameter) fail at once with EC2's reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import WorkerDeps
from activities.heartbeat import heartbeats_while_running
from snapship.ebs.client import EbsCallError
from snapship.launch import ec2 as launch_ec2
from snapship.launch.messages import (
    LaunchServerInput,
    LaunchServerResult,
    LaunchTarget,
    StartSourceInput,
    StopSourceInput,
    StopSourceResult,
    TerminateInput,
    TerminateResult,
    ValidateSettingsInput,
    ValidateSettingsResult,
)
from snapship.launch.settings import (
    InstanceTypeInfo,
    ec2_boot_mode,
    right_size,
    settings_problems,
    type_problems,
)
from snapship.vsphere import power

TYPES_TTL_S = 3600.0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _fail(err: EbsCallError) -> ApplicationError:
    return ApplicationError(str(err), type="LaunchFailed", non_retryable=not err.retryable)


class LaunchActivities:
    def __init__(self, deps: WorkerDeps) -> None:
        self.deps = deps
        self._types: tuple[float, list[InstanceTypeInfo]] | None = None
        self._types_lock = threading.Lock()

    def _current_types(self, ec2: Any) -> list[InstanceTypeInfo]:
        """DescribeInstanceTypes is long (hundreds of types over many pages): one answer per
        worker serves right-sizing for TYPES_TTL_S."""
        with self._types_lock:
            if self._types is None or time.monotonic() - self._types[0] > TYPES_TTL_S:
                self._types = (time.monotonic(), launch_ec2.instance_types(ec2))
            return self._types[1]

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.launch_server,
            self.terminate_instances,
            self.validate_launch_settings,
            self.stop_source,
            self.start_source,
        ]

    def _resolve(self, ec2: Any, target: LaunchTarget) -> tuple[str, str]:
        """(instance type, EC2 boot mode) for a target: BASIC right-sizing picks the type."""
        boot = target.boot_mode or ec2_boot_mode(target.settings.boot_mode, target.firmware)
        if target.instance_type:
            return target.instance_type, boot
        if target.settings.right_sizing == "BASIC":
            best = right_size(
                self._current_types(ec2), target.num_cpu, target.memory_mb, boot
            )
            if best is not None:
                return best.name, boot
        return target.settings.instance_type, boot

    @activity.defn(name="snapship.launch_server")
    @heartbeats_while_running
    def launch_server(self, inp: LaunchServerInput) -> LaunchServerResult:
        ec2 = self.deps.aws().ec2
        try:
            instance_type, boot = self._resolve(ec2, inp.target)
            target = LaunchTarget(**{**inp.target.__dict__, "instance_type": instance_type,
                                     "boot_mode": boot})
            image = launch_ec2.register_image(ec2, inp.job_id, target)
            activity.heartbeat("image", image)
            instance = launch_ec2.run_instance(ec2, inp.job_id, target, image)
            activity.heartbeat("instance", instance)
            view = launch_ec2.wait_running(
                ec2, instance, beat=lambda: activity.heartbeat("instance", instance)
            )
            state = view.state
            running_at = _now()  # downtime ends when the instance is seen running
            if target.settings.launch_disposition == "STOPPED":
                launch_ec2.stop_instance(ec2, instance)
                state = "stopped"
        except EbsCallError as err:
            raise _fail(err) from err
        return LaunchServerResult(instance, image, running_at, state)

    @activity.defn(name="snapship.terminate_instances")
    @heartbeats_while_running
    def terminate_instances(self, inp: TerminateInput) -> TerminateResult:
        try:
            done = launch_ec2.terminate_instances(self.deps.aws().ec2, inp.instance_ids)
        except EbsCallError as err:
            raise _fail(err) from err
        return TerminateResult(done)

    @activity.defn(name="snapship.validate_launch_settings")
    @heartbeats_while_running
    def validate_launch_settings(self, inp: ValidateSettingsInput) -> ValidateSettingsResult:
        """Check settings against EC2 before they are saved: the subnet exists, the instance type
        exists and supports the boot mode (or right-sizing finds one)."""
        s = inp.settings
        problems = settings_problems(s)
        if problems:
            return ValidateSettingsResult(problems)
        ec2 = self.deps.aws().ec2
        boot = ec2_boot_mode(s.boot_mode, inp.firmware)
        chosen = ""
        try:
            if s.subnet_id and not launch_ec2.subnet_exists(ec2, s.subnet_id):
                problems.append(f"subnet {s.subnet_id} does not exist")
            if s.right_sizing == "BASIC":
                best = right_size(self._current_types(ec2), inp.num_cpu, inp.memory_mb, boot)
                if best is None:
                    problems.append(
                        f"no current-generation instance type fits {inp.num_cpu} vCPUs and "
                        f"{inp.memory_mb} MiB with the {boot} boot mode"
                    )
                else:
                    chosen = best.name
            else:
                found = launch_ec2.instance_types(ec2, [s.instance_type])
                problems += type_problems(found[0] if found else None, s.instance_type, boot)
                chosen = s.instance_type
        except EbsCallError as err:
            raise _fail(err) from err
        return ValidateSettingsResult(problems, chosen)

    @activity.defn(name="snapship.stop_source")
    @heartbeats_while_running
    def stop_source(self, inp: StopSourceInput) -> StopSourceResult:
        with self.deps.vcenter(inp.vcenter_id) as session:
            try:
                out = power.stop_source(
                    session, inp.vm_moref, inp.mode, beat=lambda: activity.heartbeat()
                )
            except ValueError as err:
                raise ApplicationError(str(err), type="BadInput", non_retryable=True) from err
            except vim.fault.NoPermission as err:
                raise _no_permission(err, "cut over with a final sync (or use --stop-mode "
                                     "leave-running)") from err
        return StopSourceResult(out.was_powered_on, out.action, out.powered_off_by_us, _now())

    @activity.defn(name="snapship.start_source")
    @heartbeats_while_running
    def start_source(self, inp: StartSourceInput) -> bool:
        with self.deps.vcenter(inp.vcenter_id) as session:
            try:
                return power.power_on(session, inp.vm_moref)
            except vim.fault.NoPermission as err:
                raise _no_permission(err, "power the source on again") from err


def _no_permission(err: Any, what: str) -> ApplicationError:
    """vCenter's NoPermission as one line: which privilege to grant, for what."""
    privilege = str(getattr(err, "privilegeId", "") or "a power privilege")
    return ApplicationError(
        f"the vCenter user lacks the privilege {privilege} on the VM, needed to {what}",
        type="MissingPrivileges", non_retryable=True,
    )
