"""The one place where an activity's exception becomes a Temporal failure a person can read.

A worker interceptor, so no activity can forget it: every exception leaving an activity is
classified once (``snapship.faults.classify``) and re-raised as a small ``ApplicationError`` — one
line, a type, ``non_retryable`` for permanent faults — without the original exception as its
cause, so no pyvmomi repr or request context travels into the workflow history. The traceback
goes to the worker log only.

While Temporal will retry, the workflow is told (signal ``activity_retrying``, a
``ActivityRetry``) which attempt comes next, out of how many, why, and when: a run that stays in a
state because an activity is retrying says so in the status query and the console. An attempt
that timed out (its worker was killed or hung) raised nothing anywhere, so the attempt after it
tells the workflow instead, once it runs: it reads its own last failure from the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from snapship.error_text import one_line
from snapship.faults import Fault, classify
from snapship.messages import ActivityRetry

log = logging.getLogger(__name__)

RETRY_SIGNAL = "activity_retrying"
NOTIFIED_WORKFLOW_TYPES = frozenset({"SourceServerWorkflow"})
SIGNAL_TIMEOUT = timedelta(seconds=5)


def retry_delay(policy: RetryPolicy | None, failed_attempt: int) -> timedelta:
    """Temporal's backoff after ``failed_attempt`` (1-based): initial * coefficient^(n-1),
    capped at the maximum interval."""
    if policy is None:
        return timedelta(seconds=1)
    initial = policy.initial_interval or timedelta(seconds=1)
    delay = initial * (policy.backoff_coefficient ** (failed_attempt - 1))
    cap = policy.maximum_interval or initial * 100
    return min(delay, cap)


MAX_DETAILS_CHARS = 2000
"""Details travel into history with the failure; Temporal refuses a failure that is too large
("Failure exceeds size limit"), and then the attempt's failure is not recorded at all."""


def small_details(details: Sequence[Any]) -> tuple[Any, ...]:
    """An ApplicationError's details while they are small (measured as JSON), else none: the
    one-line message already says what happened."""
    try:
        size = len(json.dumps(list(details), default=str))
    except (TypeError, ValueError):
        return ()
    return tuple(details) if size <= MAX_DETAILS_CHARS else ()


def to_failure(exc: Exception, info: activity.Info) -> tuple[ApplicationError, Fault]:
    """The ApplicationError Temporal records for ``exc`` at this attempt."""
    if isinstance(exc, ApplicationError):
        fault = Fault(one_line(exc.message), exc.non_retryable, exc.type or "ApplicationError")
        return (
            ApplicationError(
                fault.message,
                *small_details(exc.details),
                type=exc.type,
                non_retryable=exc.non_retryable,
                next_retry_delay=exc.next_retry_delay,
            ),
            fault,
        )
    fault = classify(exc)
    exhausted = bool(fault.attempt_budget) and info.attempt >= fault.attempt_budget
    message = fault.message
    if exhausted and not fault.permanent:
        message = one_line(f"{message} (gave up after {info.attempt} attempts)")
    delay = timedelta(seconds=fault.retry_after_s) if fault.retry_after_s else None
    return (
        ApplicationError(
            message,
            type=fault.kind,
            non_retryable=fault.permanent or exhausted,
            next_retry_delay=delay,
        ),
        fault,
    )


def retry_notice(
    err: ApplicationError, fault: Fault, info: activity.Info, now: datetime
) -> ActivityRetry | None:
    """What the workflow is told when Temporal will try again; None when it will not."""
    policy = info.retry_policy
    if err.non_retryable or (policy and err.type in (policy.non_retryable_error_types or ())):
        return None
    max_attempts = policy.maximum_attempts if policy else 0
    if fault.attempt_budget:
        max_attempts = min(max_attempts or fault.attempt_budget, fault.attempt_budget)
    if max_attempts and info.attempt >= max_attempts:
        return None
    delay = err.next_retry_delay or retry_delay(policy, info.attempt)
    return ActivityRetry(
        activity=info.activity_type,
        next_attempt=info.attempt + 1,
        max_attempts=max_attempts,
        message=err.message,
        next_try_at=(now + delay).isoformat(),
    )


TIMEOUT_KINDS = {
    TimeoutType.TIMEOUT_TYPE_HEARTBEAT: "heartbeat",
    TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE: "start-to-close",
    TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START: "schedule-to-start",
    TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_CLOSE: "schedule-to-close",
}


def timeout_notice(info: activity.Info, timeout_type: int) -> ActivityRetry:
    """What the workflow is told by an attempt that runs because the one before timed out."""
    kind = TIMEOUT_KINDS.get(TimeoutType.ValueType(timeout_type), "a")
    policy = info.retry_policy
    return ActivityRetry(
        activity=info.activity_type,
        next_attempt=info.attempt,
        max_attempts=policy.maximum_attempts if policy else 0,
        message=f"the worker running attempt {info.attempt - 1} stopped answering ({kind} timeout)",
        next_try_at="",
    )


class FaultBoundary(Interceptor):
    """Worker interceptor: apply to every worker that runs snapship activities."""

    def __init__(self, client: Client | None) -> None:
        self._client = client

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self._client)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, client: Client | None) -> None:
        super().__init__(next)
        self._client = client
        self._timed_out: asyncio.Task[None] | None = None  # one instance per attempt

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # Beside the body, not before it: the body (and its heartbeats) must not wait on the
        # server; every later notice waits for this one, so the workflow sees them in order.
        if info.attempt > 1:
            self._timed_out = asyncio.create_task(self._after_timeout(info))
        try:
            result = await self.next.execute_activity(input)
        except FailureError as exc:
            if not isinstance(exc, ApplicationError):
                raise  # cancellation and other Temporal-owned outcomes
            err, fault = to_failure(exc, info)
            await self._failed(info, err, fault, exc)
            raise err from None
        except Exception as exc:
            err, fault = to_failure(exc, info)
            await self._failed(info, err, fault, exc)
            raise err from None
        if info.attempt > 1:
            await self._notify(
                info,
                ActivityRetry(info.activity_type, info.attempt, 0, "", "", recovered=True),
            )
        return result

    async def _failed(
        self, info: activity.Info, err: ApplicationError, fault: Fault, exc: Exception
    ) -> None:
        log.warning(
            "activity %s attempt %d failed (%s): %s",
            info.activity_type,
            info.attempt,
            "permanent" if err.non_retryable else "will retry",
            err.message,
            exc_info=exc,
        )
        notice = retry_notice(err, fault, info, datetime.now(UTC))
        if notice is not None:
            await self._notify(info, notice)

    async def _after_timeout(self, info: activity.Info) -> None:
        """If the attempt before this one timed out, tell the workflow (nothing else did)."""
        if self._client is None or info.workflow_type not in NOTIFIED_WORKFLOW_TYPES:
            return
        try:
            handle = self._client.get_workflow_handle(
                info.workflow_id or "", run_id=info.workflow_run_id
            )
            desc = await handle.describe(rpc_timeout=SIGNAL_TIMEOUT)
        except Exception as exc:
            log.info("could not read %s's last failure: %s", info.workflow_id, one_line(str(exc)))
            return
        for pending in desc.raw_description.pending_activities:
            if pending.activity_id != info.activity_id:
                continue
            if pending.last_failure.HasField("timeout_failure_info"):
                kind = pending.last_failure.timeout_failure_info.timeout_type
                await self._send(info, timeout_notice(info, kind))
            return

    async def _notify(self, info: activity.Info, notice: ActivityRetry) -> None:
        if self._timed_out is not None:
            task, self._timed_out = self._timed_out, None
            await asyncio.gather(task, return_exceptions=True)
        await self._send(info, notice)

    async def _send(self, info: activity.Info, notice: ActivityRetry) -> None:
        if self._client is None or info.workflow_type not in NOTIFIED_WORKFLOW_TYPES:
            return
        try:
            handle = self._client.get_workflow_handle(
                info.workflow_id or "", run_id=info.workflow_run_id
            )
            await handle.signal(RETRY_SIGNAL, notice, rpc_timeout=SIGNAL_TIMEOUT)
        except Exception as exc:  # the run may have ended meanwhile; the failure still counts
            log.info("could not tell %s about the retry: %s", info.workflow_id, one_line(str(exc)))
