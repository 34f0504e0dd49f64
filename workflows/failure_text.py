"""The one line a person reads for a failure that reached workflow code.

Activities already fail with one line (the worker's fault boundary makes it); here the workflow
only unwraps Temporal's envelopes (activity and child-workflow errors) down to that cause and
drops the error-type prefix `str()` of a FailureError adds ("VddkConnectFailed: ..."). Timeouts
and cancellations come from Temporal itself, so they are flattened here too.
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ChildWorkflowError, FailureError

from snapship.error_text import one_line


def failure_text(err: BaseException) -> str:
    cur: BaseException = err
    while isinstance(cur, ActivityError | ChildWorkflowError) and cur.cause is not None:
        cur = cur.cause
    return one_line(cur.message if isinstance(cur, FailureError) else str(cur))
