"""PermitCoordinatorWorkflow: one per vCenter, the single place where its caps are counted.

The caps must hold across any number of worker processes, so they cannot live in a worker: a
worker's slot count is only its own. This workflow is the semaphore of the Temporal samples:
VMs request a permit with signal-with-start (an activity, since workflow code cannot
signal-with-start), the coordinator grants by signalling the VM's workflow back, and the VM
signals a release after its VMware snapshot is gone. Holders and waiters are checked for liveness
by an activity that describes their workflows: a terminated or reset run no longer running gives
its permit back within LIVENESS_EVERY (plus the activity's time), never earlier. A dead worker does
not release anything: the VM's workflow lives on and its snapshot still exists.
The decisions themselves (order, caps, budget shares) are the pure functions of snapship.permits.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from snapship.permit_messages import (
        CoordinatorInput,
        HolderView,
        LivenessInput,
        LivenessResult,
        PermitGrant,
        PermitLimits,
        PermitRelease,
        PermitRequest,
        PermitsView,
        PermitWaiting,
        RunPriority,
        Share,
        ShareQuery,
        WaiterView,
        coordinator_id,
    )
    from snapship.permits import blackout_until, parse_window, plan_grants, shares, usage
    from workflows.activity_options import timeouts


LIVENESS_EVERY = timedelta(seconds=10)
HISTORY_EVENTS_LIMIT = 4000
LIVENESS_BY_TIME = "liveness-due-by-time"
"""Patch: the liveness check runs when its time has come, not when the wait's timer won.

When the wait's timer fired in the same workflow task as a signal that set `_dirty`, the recorded
run and a replay of it could end the wait differently (one by the timeout, which scheduled the
liveness check, the other by the condition), and the coordinator failed every workflow task
after with a non-determinism: no permit was granted again for the whole vCenter (seen twice
under load, in CI and in a rerun, each after a sticky worker was killed and its task timed
out). What the loop does next now depends on `workflow.now()` only, which a replay sees as the
recorded run did. It also checks liveness every LIVENESS_EVERY however busy the coordinator is:
each signal used to restart the wait's ten seconds."""
MIN_WAIT = timedelta(milliseconds=100)
LIVENESS_CLOCK = "liveness-clock"
"""Patch: a clock task of its own asks for the liveness check; nothing is decided by the time.

LIVENESS_BY_TIME still diverged under chaos (CI and a rerun here): the recorded run decided at
a workflow.now() older than the one its replay saw. The timer fired while the sticky worker was
dead; a freshly started worker answered a `share` query by replaying the history, timer fire
included, at the previous task's time, found the check not yet due and started a new timer; the
replay of the same task saw the task's own start time, found it due and scheduled the check:
"Activity machine does not handle TimerStarted", and no permit again. The clock task sleeps
LIVENESS_EVERY and sets a flag; its timer is never cancelled, and the main loop waits on a
condition with no timeout, so which job of a task came first, or what time a task was handled
at, changes neither the timers nor the commands."""


def _priority_label(p: int) -> str:
    try:
        return RunPriority(p).label
    except ValueError:
        return str(p)


@workflow.defn(name="PermitCoordinatorWorkflow")
class PermitCoordinatorWorkflow:
    @workflow.init
    def __init__(self, inp: CoordinatorInput) -> None:
        self._inp = inp
        self._limits = inp.limits.clamped()
        self._holders: dict[str, PermitRequest] = {h.request_key: h for h in inp.holders}
        self._waiting: dict[str, PermitRequest] = {w.request_key: w for w in inp.waiting}
        self._granted_at = dict(inp.granted_at)
        self._why: dict[str, str] = {}
        self._regrant: list[PermitRequest] = []
        self._dirty = True
        self._liveness_due: datetime | None = None
        self._liveness_wanted = False
        self._clock: asyncio.Task[None] | None = None

    def _id(self) -> str:
        return coordinator_id(self._inp.vcenter_id)

    @workflow.run
    async def run(self, inp: CoordinatorInput) -> None:
        clock = workflow.patched(LIVENESS_CLOCK)
        by_time = not clock and workflow.patched(LIVENESS_BY_TIME)
        if clock:
            # Held for the run's life: a continue-as-new ends it with the run.
            self._clock = asyncio.create_task(self._liveness_clock())
        while True:
            if clock:
                await workflow.wait_condition(lambda: self._dirty or self._liveness_wanted)
                if self._liveness_wanted:
                    self._liveness_wanted = False
                    if self._holders or self._waiting:
                        await self._check_liveness()
                    self._dirty = True
            elif by_time:  # runs recorded before LIVENESS_CLOCK replay as they ran
                await self._wait_for_change_or_liveness()
                if self._liveness_is_due():
                    await self._check_liveness()
                    self._dirty = True
            else:  # runs recorded before the patch replay as they ran
                timeout = self._next_wake()
                try:
                    await workflow.wait_condition(lambda: self._dirty, timeout=timeout)
                except TimeoutError:
                    if self._holders or self._waiting:
                        await self._check_liveness()
                    self._dirty = True
            if self._dirty:
                self._dirty = False
                await self._grant()
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CoordinatorInput(
                        vcenter_id=self._inp.vcenter_id,
                        limits=self._limits,
                        holders=list(self._holders.values()),
                        waiting=list(self._waiting.values()),
                        granted_at=dict(self._granted_at),
                    )
                )

    async def _liveness_clock(self) -> None:
        """Every LIVENESS_EVERY while any VM holds or waits, ask the main loop for a check."""
        while True:
            await workflow.wait_condition(lambda: bool(self._holders or self._waiting))
            await workflow.sleep(LIVENESS_EVERY)
            self._liveness_wanted = True

    async def _wait_for_change_or_liveness(self) -> None:
        """Until something changed or the next liveness check is due (nothing to check while no
        VM holds or waits). Which of the two ended the wait is not used (see LIVENESS_BY_TIME)."""
        if not (self._holders or self._waiting):
            self._liveness_due = None
            await workflow.wait_condition(lambda: self._dirty)
            return
        now = workflow.now()
        if self._liveness_due is None:
            self._liveness_due = now + LIVENESS_EVERY
        try:
            await workflow.wait_condition(
                lambda: self._dirty, timeout=max(self._liveness_due - now, MIN_WAIT)
            )
        except TimeoutError:
            pass

    def _liveness_is_due(self) -> bool:
        due = self._liveness_due
        now = workflow.now()
        if due is None or now < due or not (self._holders or self._waiting):
            return False
        self._liveness_due = now + LIVENESS_EVERY
        return True

    def _next_wake(self) -> timedelta | None:
        if self._holders or self._waiting:
            return LIVENESS_EVERY
        return None

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > HISTORY_EVENTS_LIMIT
        )

    def _blackout(self) -> str:
        until = blackout_until(workflow.now(), self._limits.blackout_windows)
        if until is None:
            return ""
        return f"blackout window: no new run starts before {until.strftime('%H:%M')} UTC"

    async def _grant(self) -> None:
        plan = plan_grants(
            self._limits,
            list(self._holders.values()),
            list(self._waiting.values()),
            self._blackout(),
        )
        now = workflow.now().isoformat()
        for req in plan.grant:
            self._waiting.pop(req.request_key, None)
            self._holders[req.request_key] = req
            self._granted_at[req.request_key] = now
            self._why.pop(req.request_key, None)
        changed = {k: v for k, v in plan.waiting_for.items() if self._why.get(k) != v}
        self._why = dict(plan.waiting_for)
        sends = [self._send_grant(req, now) for req in plan.grant]
        again, self._regrant = self._regrant, []
        sends += [
            self._send_grant(req, self._granted_at.get(req.request_key, now))
            for req in again
            if req.request_key in self._holders
        ]
        sends += [
            self._send_waiting(self._waiting[k], why)
            for k, why in changed.items()
            if k in self._waiting
        ]
        if sends:
            await asyncio.gather(*sends)

    async def _send_grant(self, req: PermitRequest, now: str) -> None:
        try:
            await workflow.get_external_workflow_handle(req.holder_id).signal(
                "permit_granted", PermitGrant(req.request_key, self._id(), now)
            )
        except Exception:
            # The holder is gone (completed, terminated): the permit comes straight back.
            self._drop(req.request_key)

    async def _send_waiting(self, req: PermitRequest, why: str) -> None:
        try:
            await workflow.get_external_workflow_handle(req.holder_id).signal(
                "permit_waiting", PermitWaiting(req.request_key, why)
            )
        except Exception:
            self._drop(req.request_key)

    def _drop(self, key: str) -> None:
        if self._holders.pop(key, None) is not None or self._waiting.pop(key, None) is not None:
            self._dirty = True
        self._granted_at.pop(key, None)
        self._why.pop(key, None)

    async def _check_liveness(self) -> None:
        ids = sorted({r.holder_id for r in [*self._holders.values(), *self._waiting.values()]})
        result: LivenessResult = await workflow.execute_activity(
            "snapship.permit_holders_alive",
            LivenessInput(ids),
            result_type=LivenessResult,
            **timeouts("snapship.permit_holders_alive"),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        gone = set(result.gone)
        for key, req in [*self._holders.items(), *self._waiting.items()]:
            if req.holder_id in gone:
                self._drop(key)

    # ------------------------------------------------------------------ signals

    @workflow.signal(name="request")
    def request(self, req: PermitRequest) -> None:
        if req.request_key in self._holders:
            # A repeated request (a retried activity, a reset workflow): grant again.
            self._holders[req.request_key] = req
            workflow.logger.info("permit %s already held; granting again", req.request_key)
            self._regrant.append(req)
            self._dirty = True
            return
        # One request per VM: a new run's request replaces the VM's stale ones.
        for key, other in list(self._waiting.items()):
            if other.holder_id == req.holder_id and key != req.request_key:
                self._waiting.pop(key)
        self._waiting.setdefault(req.request_key, req)
        self._dirty = True

    @workflow.signal(name="release")
    def release(self, rel: PermitRelease) -> None:
        held = self._holders.get(rel.request_key) or self._waiting.get(rel.request_key)
        if held is not None and held.holder_id == rel.holder_id:
            self._drop(rel.request_key)
            self._dirty = True

    @workflow.update(name="set_limits")
    def set_limits(self, limits: PermitLimits) -> PermitLimits:
        self._limits = limits.clamped()
        self._dirty = True
        return self._limits

    @set_limits.validator
    def _validate_limits(self, limits: PermitLimits) -> None:
        if not 1 <= limits.vcenter_vms <= 50:
            raise ValueError("the vCenter cap must be between 1 and 50 VMs")
        for name, value in (
            ("the host disk cap", limits.host_disks),
            ("the datastore disk cap", limits.datastore_disks),
            ("the EBS request budget", limits.ebs_requests_per_second),
        ):
            if value < 0:
                raise ValueError(f"{name} cannot be negative (0 means no cap)")
        for name, value in (("the total", limits.total_mbps), ("the per-VM", limits.vm_mbps)):
            if not 0 <= value <= 10_000:
                raise ValueError(f"{name} Mbit/s limit must be between 0 and 10000 (0 = none)")
        for window in limits.blackout_windows:
            parse_window(window)

    # ------------------------------------------------------------------ queries

    @workflow.query(name="permits")
    def permits(self) -> PermitsView:
        hosts, stores = usage(list(self._holders.values()))
        labels = {h.host: h.host_label or h.host for h in self._holders.values()}
        split = shares(self._limits, list(self._holders.values()))
        return PermitsView(
            coordinator_id=self._id(),
            limits=self._limits,
            holders=[
                HolderView(
                    holder_id=h.holder_id,
                    vm_name=h.vm_name,
                    priority=_priority_label(h.priority),
                    host=h.host_label or h.host,
                    disks=len(h.disk_datastores),
                    since=self._granted_at.get(k, ""),
                    share=split.get(k, Share()),
                )
                for k, h in self._holders.items()
            ],
            waiting=[
                WaiterView(
                    holder_id=w.holder_id,
                    vm_name=w.vm_name,
                    priority=_priority_label(w.priority),
                    since=w.requested_at,
                    waiting_for=self._why.get(k, "waiting for a permit"),
                )
                for k, w in sorted(
                    self._waiting.items(), key=lambda kv: (kv[1].priority, kv[1].requested_at)
                )
            ],
            vms_in_use=len(self._holders),
            disks_per_host={labels.get(h, h): n for h, n in hosts.items()},
            disks_per_datastore=dict(stores),
        )

    @workflow.query(name="share")
    def share(self, q: ShareQuery) -> Share:
        """What one holder may use of the shared budgets now (polled by its ship activity)."""
        return shares(self._limits, list(self._holders.values())).get(q.request_key, Share())
