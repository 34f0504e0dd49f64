"""activities.fault_boundary: what Temporal records for a failed attempt, and the retry notice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from pyVmomi import vmodl
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from activities.fault_boundary import retry_delay, retry_notice, to_failure
from snapship.vddk.binding import VddkError

POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
    non_retryable_error_types=["IneligibleVm"],
)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def info(attempt: int, policy: RetryPolicy | None = POLICY) -> Any:
    return SimpleNamespace(attempt=attempt, retry_policy=policy, activity_type="snapship.ship")


def test_permanent_fault_is_non_retryable_and_small() -> None:
    exc = vmodl.fault.MethodNotFound(msg="not here", method="QueryChangedDiskAreas")
    err, fault = to_failure(exc, info(1))
    assert err.non_retryable and err.type == "VcenterMethodNotFound"
    assert "\n" not in err.message and err.__cause__ is None
    assert retry_notice(err, fault, info(1), NOW) is None


def test_transient_fault_announces_the_next_attempt() -> None:
    err, fault = to_failure(VddkError(14011, "The network connection to the host was lost"),
                            info(3))
    assert not err.non_retryable
    notice = retry_notice(err, fault, info(3), NOW)
    assert notice is not None
    assert (notice.next_attempt, notice.max_attempts) == (4, 10)
    assert notice.next_try_at == (NOW + timedelta(seconds=20)).isoformat()  # 5 * 2^(3-1)
    assert notice.message.startswith("VDDK error 14011")


def test_last_attempt_announces_nothing() -> None:
    err, fault = to_failure(ConnectionResetError("reset"), info(10))
    assert not err.non_retryable
    assert retry_notice(err, fault, info(10), NOW) is None


def test_vddk_connect_budget_then_gives_up() -> None:
    exc = VddkError(14008, "Cannot connect to the host", "VixDiskLib_ConnectEx")
    err, fault = to_failure(exc, info(2))
    notice = retry_notice(err, fault, info(2), NOW)
    assert notice is not None and (notice.next_attempt, notice.max_attempts) == (3, 4)
    assert notice.next_try_at == (NOW + timedelta(seconds=5)).isoformat()
    err, fault = to_failure(exc, info(4))
    assert err.non_retryable
    assert err.message.endswith("(gave up after 4 attempts)")
    assert retry_notice(err, fault, info(4), NOW) is None


def test_existing_application_error_keeps_its_type_on_one_line() -> None:
    exc = ApplicationError("VM is ineligible:\n  has snapshots", type="IneligibleVm")
    err, fault = to_failure(exc, info(1))
    assert err.message == "VM is ineligible: has snapshots" and err.type == "IneligibleVm"
    assert retry_notice(err, fault, info(1), NOW) is None  # the policy does not retry that type


def test_backoff_is_capped() -> None:
    assert retry_delay(POLICY, 1) == timedelta(seconds=5)
    assert retry_delay(POLICY, 20) == timedelta(minutes=5)
    assert retry_delay(None, 3) == timedelta(seconds=1)


def test_large_details_are_dropped_small_ones_kept() -> None:
    huge, _ = to_failure(ApplicationError("boom", "x" * 100_000, type="Big"), info(1))
    assert huge.details == () and huge.message == "boom" and huge.type == "Big"
    small, _ = to_failure(ApplicationError("boom", {"disk": 2000}, type="Small"), info(1))
    assert small.details == ({"disk": 2000},)
