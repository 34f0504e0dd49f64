"""Is a snapship worker running? Asked before any command that needs one, answered in seconds.

Why: an Update or Query sent while no worker polls the control queue is not refused by Temporal;
it waits (a Query until its RPC deadline, an Update until a worker comes back, maybe hours
later). So the console first asks Temporal who polls the control task queue
(DescribeTaskQueue) and stops with one line saying what to start when nobody does.

Temporal keeps a poller in that list for a few minutes after it stopped polling, so a worker
that died a moment ago still looks alive here. That window is covered by the commands'
deadlines (snapship.command_deadline): the console waits a bounded time, and a command that
expired is refused by the workflow when a worker runs it later.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

CHECK_TIMEOUT = timedelta(seconds=5)
# An idle worker's poll is seen again about once a minute (measured: the server ends a long poll
# after ~60 s and the poller's last_access_time is when that poll began); a poller not seen for
# longer than this has stopped. A stopped worker keeps its entry with the old time.
POLLER_FRESH = timedelta(seconds=75)
# A worker started a moment ago is not listed until its first poll arrives.
STARTUP_GRACE = timedelta(seconds=3)


class NoWorkerError(Exception):
    """No worker polls the queue; the message says what to start."""


def no_worker_message(task_queue: str) -> str:
    return (
        f"no snapship worker is running (nothing polls task queue {task_queue!r}); "
        "start it with `snapship worker` and try again; nothing was sent"
    )


async def live_pollers(client: Client, task_queue: str, now: datetime | None = None) -> int:
    """How many workflow pollers of `task_queue` were seen within POLLER_FRESH."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    response = await client.workflow_service.describe_task_queue(
        request, timeout=CHECK_TIMEOUT
    )
    current = now or datetime.now(UTC)
    fresh = 0
    for poller in response.pollers:
        if not poller.HasField("last_access_time"):
            fresh += 1
            continue
        seen = poller.last_access_time.ToDatetime(tzinfo=UTC)
        if current - seen <= POLLER_FRESH:
            fresh += 1
    return fresh


async def require_worker(client: Client, task_queue: str) -> None:
    """Return when a worker polls `task_queue`; raise NoWorkerError (one line) otherwise.

    A worker that has just started shows up only once its first poll reaches the server, so
    an empty answer is asked again for STARTUP_GRACE before it counts as "no worker".
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + STARTUP_GRACE.total_seconds()
    while True:
        try:
            count = await asyncio.wait_for(
                live_pollers(client, task_queue), CHECK_TIMEOUT.total_seconds() + 1
            )
        except (TimeoutError, RPCError) as exc:
            raise NoWorkerError(
                f"Temporal did not say whether a worker runs ({_short(exc)}); check "
                "`snapship temporal status`"
            ) from None
        if count > 0:
            return
        if loop.time() >= give_up:
            raise NoWorkerError(no_worker_message(task_queue))
        await asyncio.sleep(0.5)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
