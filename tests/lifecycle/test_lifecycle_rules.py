"""The lifecycle's rules (snapship.lifecycle) and launch settings checks, without Temporal."""

from __future__ import annotations

import pytest

from snapship.launch.messages import LaunchSettings, VolumeSettings
from snapship.launch.settings import (
    InstanceTypeInfo,
    ec2_boot_mode,
    right_size,
    settings_problems,
    type_problems,
)
from snapship.lifecycle import ALLOWED_FROM, Command, LifecycleView, next_state, refusal
from snapship.states import LifeCycleState as LCS

ALL_COMMANDS = list(Command)


def view(state: LCS, **kw: object) -> LifecycleView:
    base: dict[str, object] = {
        "lifecycle_state": state.value,
        "has_complete_group": True,
        "cutover_launched": True,
        "target_instances": 1,
    }
    base.update(kw)
    return LifecycleView(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
@pytest.mark.parametrize("state", list(LCS))
def test_every_command_in_every_state_is_allowed_or_refused_with_a_reason(
    cmd: Command, state: LCS
) -> None:
    why = refusal(cmd, view(state))
    if state in ALLOWED_FROM[cmd]:
        assert why is None
    else:
        assert why is not None
        # One sentence a person reads: names the state it is in, no repr.
        assert "\n" not in why and "LifeCycleState" not in why and "Command." not in why
        assert why.startswith("the server is ")


def test_wrong_state_reasons_name_the_state_and_what_is_needed() -> None:
    why = refusal(Command.START_CUTOVER, view(LCS.READY_FOR_TEST))
    assert why == "the server is ready for testing; start cutover needs it ready for cutover"
    why = refusal(Command.MARK_ARCHIVED, view(LCS.TESTING))
    assert why is not None and "cutover complete or disconnected" in why


def test_archived_refuses_everything() -> None:
    for cmd in ALL_COMMANDS:
        assert refusal(cmd, view(LCS.CUTOVER, archived=True)) == "the server is archived"


def test_launch_needs_a_complete_group() -> None:
    for cmd in (Command.START_TEST, Command.START_CUTOVER, Command.MARK_READY_FOR_CUTOVER):
        state = next(iter(sorted(ALLOWED_FROM[cmd])))
        why = refusal(cmd, view(state, has_complete_group=False))
        assert why == "the server has no complete snapshot group to launch from yet"


def test_no_lifecycle_move_while_a_job_runs_but_settings_may_change() -> None:
    busy = view(LCS.TESTING, job_in_progress="job-1")
    for cmd in (Command.START_TEST, Command.MARK_READY_FOR_CUTOVER,
                Command.TERMINATE_TARGET_INSTANCES, Command.DISCONNECT):
        why = refusal(cmd, busy)
        assert why is not None and "job job-1 is still in progress" in why
    assert refusal(Command.UPDATE_LAUNCH_SETTINGS, busy) is None


def test_finalize_needs_a_launched_cutover_instance() -> None:
    why = refusal(Command.FINALIZE_CUTOVER, view(LCS.CUTTING_OVER, cutover_launched=False))
    assert why is not None and "has not launched" in why


def test_cutover_needs_the_vm_for_its_final_sync() -> None:
    why = refusal(Command.START_CUTOVER, view(LCS.READY_FOR_CUTOVER, vm_present=False))
    assert why is not None and "final sync" in why


def test_terminate_needs_an_instance() -> None:
    why = refusal(Command.TERMINATE_TARGET_INSTANCES, view(LCS.TESTING, target_instances=0))
    assert why is not None and "no instance" in why


def test_transitions_follow_mgn() -> None:
    assert next_state(Command.START_TEST, "READY_FOR_TEST") == "TESTING"
    assert next_state(Command.MARK_READY_FOR_CUTOVER, "TESTING") == "READY_FOR_CUTOVER"
    assert next_state(Command.REVERT_TO_READY_FOR_TEST, "READY_FOR_CUTOVER") == "READY_FOR_TEST"
    assert next_state(Command.START_CUTOVER, "READY_FOR_CUTOVER") == "CUTTING_OVER"
    assert next_state(Command.REVERT_CUTOVER, "CUTTING_OVER") == "READY_FOR_CUTOVER"
    assert next_state(Command.FINALIZE_CUTOVER, "CUTTING_OVER") == "CUTOVER"
    assert next_state(Command.DISCONNECT, "TESTING") == "DISCONNECTED"
    assert next_state(Command.MARK_ARCHIVED, "CUTOVER") == "CUTOVER"
    assert next_state(Command.TERMINATE_TARGET_INSTANCES, "TESTING") == "TESTING"


# ------------------------------------------------------------------ launch settings


def test_default_settings_are_well_formed() -> None:
    assert settings_problems(LaunchSettings()) == []


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (LaunchSettings(launch_disposition="RUNNING"), "launch disposition must be one of"),
        (LaunchSettings(boot_mode="EFI"), "boot mode must be one of"),
        (LaunchSettings(right_sizing="SMART"), "right-sizing must be one of"),
        (LaunchSettings(right_sizing="NONE", instance_type=""), "an instance type is needed"),
        (LaunchSettings(kms_key_id="alias/x"), "EBS encryption is off"),
        (LaunchSettings(private_ip="10.0.0.5"), "private IP copy is off"),
        (LaunchSettings(volume_type="gp9"), "default volume: volume type must be one of"),
        (LaunchSettings(volumes=[VolumeSettings(2000, "io2")]), "disk 2000: io2 volumes need"),
        (LaunchSettings(volumes=[VolumeSettings(2000, "gp3", iops=100)]), "IOPS must be within"),
        (LaunchSettings(volumes=[VolumeSettings(2000, "gp2", throughput=200)]),
         "gp2 volumes take no throughput"),
        (LaunchSettings(volumes=[VolumeSettings(2000), VolumeSettings(2000)]), "same disk twice"),
    ],
)
def test_bad_settings_get_a_clear_reason(settings: LaunchSettings, problem: str) -> None:
    problems = settings_problems(settings)
    assert any(problem in p for p in problems), problems


TYPES = [
    InstanceTypeInfo("m4.large", 2, 8192, False, ("legacy-bios",)),
    InstanceTypeInfo("t3.micro", 2, 1024, True, ("legacy-bios", "uefi")),
    InstanceTypeInfo("t3.medium", 2, 4096, True, ("legacy-bios", "uefi")),
    InstanceTypeInfo("m5.large", 2, 8192, True, ("legacy-bios", "uefi")),
    InstanceTypeInfo("m5.xlarge", 4, 16384, True, ("legacy-bios", "uefi")),
    InstanceTypeInfo("c4.xlarge", 4, 7680, True, ("legacy-bios",)),
    InstanceTypeInfo("m6g.large", 2, 8192, True, ("uefi",), ("arm64",)),
]


def test_basic_right_sizing_picks_the_smallest_current_generation_fit() -> None:
    assert right_size(TYPES, 2, 4096, "legacy-bios").name == "t3.medium"  # type: ignore[union-attr]
    assert right_size(TYPES, 2, 6000, "legacy-bios").name == "m5.large"  # type: ignore[union-attr]
    assert right_size(TYPES, 3, 4096, "legacy-bios").name == "c4.xlarge"  # type: ignore[union-attr]
    # c4 has no UEFI; arm64 types never fit an x86 VM.
    assert right_size(TYPES, 3, 4096, "uefi").name == "m5.xlarge"  # type: ignore[union-attr]
    assert right_size(TYPES, 64, 4096, "uefi") is None


def test_boot_mode_follows_the_firmware_unless_set() -> None:
    assert ec2_boot_mode("USE_SOURCE", "efi") == "uefi"
    assert ec2_boot_mode("USE_SOURCE", "bios") == "legacy-bios"
    assert ec2_boot_mode("UEFI", "bios") == "uefi"
    assert ec2_boot_mode("LEGACY_BIOS", "efi") == "legacy-bios"


def test_type_problems() -> None:
    assert type_problems(None, "x9.huge", "uefi") == ["instance type x9.huge does not exist in "
                                                      "this region"]
    assert "does not support the uefi" in type_problems(TYPES[5], "c4.xlarge", "uefi")[0]
    assert type_problems(TYPES[2], "t3.medium", "uefi") == []
